"""`dltrain export`: read a verified checkpoint, write ONNX or a safetensors bundle atomically,
never into a run's checkpoints."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..engine import checkpoint as ck
from ..errors import ConfigError, DltrainIOError
from ..fsutil import fault
from ..run.inference import load_checkpoint

FORMATS = ("onnx", "safetensors")


def export_checkpoint(src: str, fmt: str, output: str) -> Path:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    out = Path(output)
    if "checkpoints" in out.resolve().parts:
        raise DltrainIOError(
            f"{out}: refusing to write into a run's checkpoints directory; "
            "choose another output path"
        )
    loaded = load_checkpoint(src)  # verified before anything is written
    if fmt == "onnx":
        from .onnx_export import to_onnx

        data = to_onnx(loaded)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            fault("export")
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except OSError as e:
            with contextlib.suppress(OSError):  # cleanup never masks the first error
                tmp.unlink(missing_ok=True)
            raise DltrainIOError(f"cannot write {out}: {e.strerror or e}") from None
        return out
    files = {
        "model.safetensors": ck.tensors_bytes(loaded.model.state_tensors()),
        "spec.json": json.dumps(loaded.spec.model_dump(mode="json"), indent=1).encode(),
        "preprocessing.json": json.dumps(loaded.pre.to_json(), indent=1).encode(),
    }
    if out.exists() and not (out / ck.MANIFEST).exists():
        raise DltrainIOError(f"{out} exists and is not a dltrain bundle; choose a new directory")
    return ck.commit(out.resolve().parent, out.resolve().name, files, what="bundle")
