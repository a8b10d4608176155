"""What a prior run keeps of its token file, so that sampling needs nothing else.

A prior trained on a token file writes ``tokens.json`` into its run folder: K, the scales, L,
the class count, the token file (absolute path and sha256) and the tokenizer that made the ids
(absolute path and the sha256 of its weights). ``vqlab sample`` builds the prior from these
facts, from any working directory, and refuses a tokenizer whose weights changed since.

The token file names its tokenizer by the path ``vqlab tokenize`` was given; a relative one is
read against the working directory, then against the token file's folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vqlab.errors import ConfigError
from vqlab.priors.tokens import TokenData, TokenFileError

FACTS_FILE = "tokens.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_files(path: str | Path) -> tuple[Path, Path] | None:
    """(weights, config.json) of a tokenizer run folder, its checkpoint/ or a save_pretrained
    folder; None where there is none."""
    p = Path(path)
    for folder in (p / "checkpoint", p):
        if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
            return folder / "model.safetensors", folder / "config.json"
    return None


def resolve_tokenizer(name: str, token_file: str | Path) -> Path | None:
    """The tokenizer a token file names, as an absolute path; None for no name or no such
    folder (relative names: the working directory first, then the token file's folder)."""
    if not name:
        return None
    for candidate in (Path(name), Path(token_file).parent / name):
        if tokenizer_files(candidate) is not None:
            return candidate.resolve()
    return None


def tokenizer_codebook_size(path: Path) -> int:
    """K of the tokenizer at ``path``, read from its config.json (no weights loaded); a damaged
    one raises ``CheckpointError``."""
    from vqlab.models.checkpoint import load_checkpoint_config

    # the validated config: fsq's K is the product of its levels, not the key as typed
    return load_checkpoint_config(tokenizer_files(path)[1].parent)[0].vq.codebook_size


def token_facts(tokens: TokenData, token_file: str | Path) -> dict[str, Any]:
    """The facts of a validated token file; checks K against the tokenizer it names.

    Raises :class:`TokenFileError` when that tokenizer has another codebook size (its ids
    would decode with the wrong codes).
    """
    tok = resolve_tokenizer(tokens.tokenizer, token_file)
    if tok is not None:
        k = tokenizer_codebook_size(tok)
        if k != tokens.codebook_size:
            raise TokenFileError(
                f"{token_file}: codebook_size {tokens.codebook_size} differs from its tokenizer "
                f"{tok} (vq.codebook_size={k}); tokenize again with that tokenizer"
            )
    return {
        "codebook_size": tokens.codebook_size,
        "scales": list(tokens.scales),
        "seq_len": tokens.seq_len,
        "num_classes": tokens.num_classes,
        "token_file": str(Path(token_file).resolve()),
        "token_file_sha256": sha256_file(token_file),
        "tokenizer": "" if tok is None else str(tok),
        "tokenizer_named": tokens.tokenizer,
        "tokenizer_sha256": "" if tok is None else sha256_file(tokenizer_files(tok)[0]),
    }


def write_facts(run: str | Path, facts: dict[str, Any]) -> None:
    (Path(run) / FACTS_FILE).write_text(json.dumps(facts, indent=2) + "\n")


def read_facts(run: str | Path) -> dict[str, Any] | None:
    """The run's ``tokens.json``, or None for a run trained before it was written."""
    path = Path(run) / FACTS_FILE
    if not path.is_file():
        return None
    try:
        facts = json.loads(path.read_text())
        for key in ("codebook_size", "scales", "num_classes", "tokenizer", "tokenizer_sha256"):
            facts[key]  # noqa: B018 - every key must be there
        return facts
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: damaged ({type(err).__name__}: {err})") from None


def checked_tokenizer(facts: dict[str, Any]) -> Path | None:
    """The run's tokenizer if it is still there and unchanged; None if it is gone.

    Raises :class:`ConfigError` when its weights differ from those the prior was trained on.
    """
    if not facts["tokenizer"]:
        return None
    files = tokenizer_files(facts["tokenizer"])
    if files is None:
        return None
    digest = sha256_file(files[0])
    if digest != facts["tokenizer_sha256"]:
        raise ConfigError(
            f"the tokenizer {facts['tokenizer']} changed since this prior was trained on its ids "
            f"(weights sha256 {digest[:12]}..., recorded {facts['tokenizer_sha256'][:12]}...); "
            "its codes would not be the ones the prior learned"
        )
    return Path(facts["tokenizer"])
