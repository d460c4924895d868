"""Read the curriculum manifest (curriculum.toml), the single source of truth for stages."""

import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = ROOT / "exercises"
REFERENCE = ROOT / "reference"
TESTS = ROOT / "tests"


@dataclass(frozen=True)
class Stage:
    id: str  # "s03_attention": module name in exercises/ and reference/, suite tests/test_<id>.py
    number: int  # 3: the position in the learning order, from the id's prefix
    part: int  # 1 = the encoder-decoder transformer, 2 = the modern decoder-only model
    title: str  # one line for the scorecard
    points: int  # what passing the whole suite is worth
    depends: tuple[str, ...]  # earlier stages whose code this stage imports
    hints: tuple[str, ...]  # from a nudge to a near-solution

    @property
    def suite(self) -> Path:
        return TESTS / f"test_{self.id}.py"

    def source(self, tree: Path) -> Path:
        """The stage's file inside an implementation tree such as exercises/ or reference/."""
        return Path(tree) / f"{self.id}.py"


class ManifestError(ValueError):
    """The manifest is missing or malformed; the message names the file, the entry and the field."""


def load(path: Path = ROOT / "curriculum.toml") -> tuple[Stage, ...]:
    """Parse and validate the manifest; stages come back in learning order."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ManifestError(f"{Path(path).name}: cannot be read ({reason})") from None
    stages: list[Stage] = []
    for index, entry in enumerate(data.get("stage", []), start=1):
        where = f"{path.name}: stage #{index}"
        try:
            stage = Stage(id=entry["id"], number=int(entry["id"][1:3]), part=int(entry["part"]),
                          title=str(entry["title"]), points=int(entry["points"]),
                          depends=tuple(entry.get("depends", ())), hints=tuple(entry.get("hints", ())))
        except (KeyError, ValueError, TypeError) as error:
            raise ManifestError(f"{where}: missing or malformed field ({error})") from None
        if not stage.id.startswith(f"s{index:02d}_"):
            raise ManifestError(f"{where}: id {stage.id!r} should start with 's{index:02d}_'")
        if unknown := [dep for dep in stage.depends if dep not in {s.id for s in stages}]:
            raise ManifestError(f"{where} ({stage.id}): depends on {unknown}, which are not earlier stages")
        stages.append(stage)
    return tuple(stages)
