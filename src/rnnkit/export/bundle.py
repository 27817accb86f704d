"""The export folder: model file, vocabulary, tokenizer settings, labels, a script and a README.

Everything a program needs to classify text without rnnkit is in plain JSON; ``classify.py``
(numpy + onnxruntime or torch) is a working example. The folder is assembled next to its
destination and renamed into place, so a failed export leaves nothing behind and an existing
export is only replaced with ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from rnnkit import __version__
from rnnkit.export.formats import FORMATS, INPUTS, MODEL_FILES, ONNX_OPSET, OUTPUTS, ExportError, write
from rnnkit.io import make_folders
from rnnkit.models import module_path
from rnnkit.runs import TrainedRun
from rnnkit.tasks import MULTILABEL

MANIFEST = "export.json"


def export_run(
    run: TrainedRun, fmt: str, out: str | os.PathLike[str], overwrite: bool = False
) -> dict[str, Any]:
    """Write ``run``'s model as ``fmt`` with everything needed to use it into ``out``; return the manifest."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not a format; use one of {', '.join(FORMATS)}")
    if run.task == MULTILABEL:
        raise ExportError(
            f"{run.path} is a multi-label run; export writes single-label (softmax) models only for now: "
            "classify with rnnkit predict, rnnkit serve or rnnkit.load"
        )
    target = Path(out)
    _check_target(target, overwrite)
    make_folders(target.parent)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
    try:
        model = module_path(run.model).cpu().eval()
        max_difference = write(model, fmt, staging / MODEL_FILES[fmt])
        manifest = _manifest(run, fmt, max_difference)
        _write_json(staging / "vocab.json", run.vocab.itos)
        _write_json(staging / "tokenizer.json", _tokenizer_settings(run))
        _write_json(staging / "labels.json", run.label_names)
        _write_json(staging / MANIFEST, manifest)
        (staging / "classify.py").write_text(
            resources.files("rnnkit.export").joinpath("classify.py").read_text(encoding="utf-8"),
            encoding="utf-8",
        )
        (staging / "README.md").write_text(readme(run, fmt, max_difference), encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace(target, staging)
    return manifest


def _replace(target: Path, staging: Path) -> None:
    """Move the finished folder into place; an old export is removed only once the new one is there."""
    if not target.exists():
        staging.rename(target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    staging.rename(target)
    shutil.rmtree(old)


def _check_target(target: Path, overwrite: bool) -> None:
    if target.is_file():
        raise ExportError(f"--out {target} is a file; give a folder")
    if not target.exists() or not any(target.iterdir()):
        return
    if not (target / MANIFEST).is_file():
        raise ExportError(f"--out {target} is not empty and holds no rnnkit export; choose another folder")
    if not overwrite:
        raise ExportError(f"--out {target} already holds an export; pass --overwrite to replace it")


def _tokenizer_settings(run: TrainedRun) -> dict[str, Any]:
    return {
        **run.tokenizer.to_dict(),
        "max_length": run.max_length,
        "pad_id": run.vocab.pad_id,
        "unk_id": run.vocab.unk_id,
    }


def _tokenize_code(kind: str) -> tuple[str, str]:
    """``(import line, statement)`` that splits ``text`` into ``tokens`` as the run's tokenizer does."""
    if kind == "regex":  # Python re: the non-empty matches of re.findall
        return "", 'tokens = [t for t in re.findall(settings["pattern"], text) if t]'
    if kind == "whitespace":
        return "", "tokens = text.split()"
    return "from classify import make_tokenizer  # the run's tokenizer", "tokens = tokenize(text)"


def _manifest(run: TrainedRun, fmt: str, max_difference: float) -> dict[str, Any]:
    return {
        "format": fmt,
        "model_file": MODEL_FILES[fmt],
        "inputs": {
            INPUTS[0]: "int64 (batch, length): token ids, right-padded with 0",
            INPUTS[1]: "int64 (batch,): real tokens per row, 1 <= length",
        },
        "outputs": {
            OUTPUTS[0]: "float32 (batch, classes)",
            OUTPUTS[1]: "float32 (batch, classes): softmax of the logits, columns in labels.json order",
        },
        "onnx_opset": ONNX_OPSET if fmt == "onnx" else None,
        "run": str(run.path.resolve()),
        "model": {"name": run.config.model.name, "classes": len(run.label_names)},
        "checked_max_difference": max_difference,
        "rnnkit_version": __version__,
        "torch_version": torch.__version__,
    }


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def readme(run: TrainedRun, fmt: str, max_difference: float) -> str:
    """How to use the folder, with and without rnnkit."""
    model_file = MODEL_FILES[fmt]
    model_row = (
        "the model: inputs `token_ids` (int64, batch x length, right-padded with 0) and `lengths` "
        "(int64, batch); outputs `logits` and `probabilities` (float32, batch x classes); batch size "
        "and length are free"
    )
    runtime = "onnxruntime" if fmt == "onnx" else "torch"
    if fmt == "onnx":
        load = 'session = onnxruntime.InferenceSession("model.onnx")'
        call = 'session.run(["probabilities"], {"token_ids": token_ids, "lengths": lengths})[0]'
        imports = "import onnxruntime"
    else:
        load = 'module = torch.jit.load("model.pt")'
        call = "module(torch.from_numpy(token_ids), torch.from_numpy(lengths))[1].detach().numpy()"
        imports = "import torch"
    tokenize_import, tokenize_statement = _tokenize_code(run.tokenizer.kind)
    if tokenize_import:
        imports += "\n" + tokenize_import
        load += '\ntokenize = make_tokenizer({**settings, "lowercase": False})  # encode() lowercases'
    return f"""# {run.path.name}: exported by rnnkit {__version__} ({fmt})

A text classifier ({run.config.model.name}, {len(run.label_names)} classes) from the run
`{run.path.resolve()}`.

| file | what |
|---|---|
| `{model_file}` | {model_row} |
| `vocab.json` | the tokens; a token's id is its position (`<pad>` = 0, `<unk>` = 1) |
| `tokenizer.json` | how text becomes tokens: lowercase or not, the regex (Python `re`), `max_length` |
| `labels.json` | the class names, in the order of the output columns |
| `classify.py` | a working example with numpy and {runtime} only |
| `export.json` | formats, versions, the run, and the check made at export |

At export the model's probabilities were compared with rnnkit's on batches of several sizes and
lengths: largest difference {max_difference:.1e}.

## Without rnnkit

```bash
pip install numpy {runtime}
python classify.py "The shuttle launch was delayed again."    # LABEL<TAB>PROBABILITY
python classify.py --file texts.txt                           # one text per line
```

The same steps by hand (tokenise, map to ids, pad, run), e.g. to port them to another language:

```python
# without rnnkit
import json, re
import numpy as np
{imports}

settings = json.load(open("tokenizer.json", encoding="utf-8"))
ids = {{token: i for i, token in enumerate(json.load(open("vocab.json", encoding="utf-8")))}}
labels = json.load(open("labels.json", encoding="utf-8"))
{load}

def encode(text):
    text = text.lower() if settings["lowercase"] else text
    {tokenize_statement}
    tokens = tokens[: settings["max_length"]]
    return [ids.get(t, settings["unk_id"]) or settings["unk_id"] for t in tokens] or [settings["unk_id"]]

texts = ["The shuttle launch was delayed again.", "What a goal in the third period!"]
encoded = [encode(text) for text in texts]
lengths = np.array([len(e) for e in encoded], dtype=np.int64)
token_ids = np.zeros((len(encoded), lengths.max()), dtype=np.int64)    # 0 is <pad>
for row, e in enumerate(encoded):
    token_ids[row, : len(e)] = e
probabilities = {call}
for text, row in zip(texts, probabilities):
    print(labels[int(row.argmax())], round(float(row.max()), 4), text)
```

An empty text (no tokens) is read as one `<unk>`, and the literal text `<pad>` as `<unk>` too.

## With rnnkit

The run folder itself needs no export: `rnnkit.load("{run.path.resolve()}").predict_proba(texts)`,
`rnnkit predict --run-dir {run.path.resolve()} TEXT`, or `rnnkit serve --run-dir ...` for HTTP.
`from classify import Classifier; Classifier(".").predict_proba(texts)` uses this folder from Python.
"""
