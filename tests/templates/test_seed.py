"""Seeding templates from TEMPLATES_DIR at start-up: idempotent, validated, file named."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptrelay.app import Runtime
from promptrelay.settings import Settings
from promptrelay.templates.service import SeedError


async def _started(settings: Settings) -> Runtime:
    runtime = Runtime(settings)
    await runtime.start()
    return runtime


async def test_seed_files_become_versions_once(tmp_path: Path):
    folder = tmp_path / "seeds"
    folder.mkdir()
    (folder / "greet.yaml").write_text(
        "body: |\n  Hi {{ who }}\nvariables:\n  - name: who\nmodel: fast\ndescription: hello\n"
    )
    (folder / "other.yml").write_text("name: renamed\nbody: plain text\n")
    (folder / "notes.txt").write_text("ignored")
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", templates_dir=str(folder))

    runtime = await _started(settings)
    greet = await runtime.templates.get("greet")
    assert greet.version == 1 and greet.draft.model == "fast"
    assert greet.draft.body == "Hi {{ who }}\n"
    assert (await runtime.templates.get("renamed")).draft.body == "plain text"
    await runtime.close()

    runtime = await _started(settings)  # same files: no new versions
    assert [v.version for v in await runtime.templates.versions("greet")] == [1]
    await runtime.close()

    (folder / "greet.yaml").write_text("body: Hello {{ who }}\nvariables: [who]\n")
    runtime = await _started(settings)
    assert (await runtime.templates.get("greet")).version == 2
    await runtime.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("body: '{{ a }}'\n", "variable 'a' is used but not declared"),
        ("body: [1, 2]\n", "body: required, a non-empty string"),
        ("body: x\nvariables: [{name: a, required: maybe}]\n", "variables.0.required"),
        ("body: '{{ x.__class__ }}'\nvariables: [x]\n", "'__class__' is not accessible"),
        ("body: 'x\n  - : ]\n", "cannot read YAML"),
    ],
)
async def test_a_bad_seed_file_stops_start_up_naming_it(tmp_path: Path, text: str, expected: str):
    folder = tmp_path / "seeds"
    folder.mkdir()
    (folder / "good.yaml").write_text("body: fine\n")
    (folder / "broken.yaml").write_text(text)
    runtime = Runtime(
        Settings(database_url=f"sqlite:///{tmp_path}/t.db", templates_dir=str(folder))
    )
    with pytest.raises(SeedError) as caught:
        await runtime.start()
    assert str(folder / "broken.yaml") in str(caught.value)
    assert expected in str(caught.value)
    await runtime.close()
