"""Damaged compose files give a LayerbuildError (a message with the file and line), never a traceback."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerbuild.compose import Options, load_project
from layerbuild.compose.render import to_yaml
from layerbuild.errors import LayerbuildError
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "compose"
PIECES = [*":-[]{}$#&*!|>'\",.~/\n\t 09ax", "${", "!reset ", "!override ", "<<: ", "  ", "- "]
edit = st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(["delete", "replace", "insert"]),
                 st.sampled_from(PIECES))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(["webapp", "overrides"]), edits=st.lists(edit, min_size=1, max_size=4))
def test_mutated_projects_load_or_fail_plainly(case: str, edits: list[tuple[float, str, str]]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / case
        shutil.copytree(GOLDEN / case, project)
        text = list((GOLDEN / case / "compose.yaml").read_text())
        for where, how, piece in edits:
            at = int(where * len(text))
            if how == "delete":
                del text[at]
            elif how == "replace":
                text[at] = piece
            else:
                text.insert(at, piece)
        (project / "compose.yaml").write_text("".join(text))
        try:
            to_yaml(load_project(Options(cwd=project, environ={}), warn=lambda m: None).to_dict())
        except LayerbuildError as exc:
            assert exc.exit_code == 1 and exc.message
