"""Finding and loading the agreement profile (DESIGN §12) a gateway applies to handling terms.

`[agreement_profile]` in the configuration names the TOML file; left empty, the gateway loads the
profile of the worked example that ships with the software (`keys-example/agreement-profile.toml`,
the US–China customs mutual assistance agreement), so that both example gateways agree without a
setting. The file's exact bytes are what both sides compare (its SHA-256 is in each key bundle).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

from ..core.errors import ConfigError
from ..core.profile import Profile, ProfileError, load_profile
from .config import Config

PROFILE_FILE: Final = "agreement-profile.toml"


def _example(marker: str) -> Path:
    here = Path(__file__).resolve()
    for cand in (here.parents[3] / "keys-example", here.parents[1] / "keys-example"):
        if (cand / marker).exists():
            return cand
    raise FileNotFoundError("keys-example/ not found beside the package")


def example_dir() -> Path:
    """`keys-example/` of the source tree, or the copy shipped inside the package."""
    return _example("US-CBP/bundle.json")


@functools.cache
def builtin_profile() -> Profile:
    """The worked example's profile, shipped with the software (found even while the example
    identities are being regenerated)."""
    return load_profile((_example(PROFILE_FILE) / PROFILE_FILE).read_bytes())


def profile_path(config: Config) -> Path | None:
    """The configured profile file, or None for the built-in example profile."""
    return config.path(config.agreement_profile) if config.agreement_profile else None


def load_agreement_profile(config: Config) -> Profile:
    """The profile the configuration names; ConfigError (field `agreement_profile`) if it cannot be
    read, ProfileError naming the TOML key if it is not a valid profile."""
    path = profile_path(config)
    if path is None:
        return builtin_profile()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(
            f"cannot read the agreement profile {path}: {e.strerror or e}", field="agreement_profile"
        ) from None
    try:
        return load_profile(data)
    except ProfileError as e:
        e.detail = f"{path}: {e.detail}"
        raise
