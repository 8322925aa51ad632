"""plan = run over notebook 01's form (:mod:`choices`): every release, output format, type and low-disk choice."""
from __future__ import annotations

import pytest

from choices import check_plan_equals_run, combinations, ids
from helpers.stages import MergeStage

# the importance-matrix route's own pairs (OUTTYPE has too many values to be paired with every dropdown)
ROUTE = [{"outtype": "iq3_xxs", "imatrix": "no"}, {"outtype": "iq4_xs", "intermediate": "f16"},
         {"outtype": "q4_k_m", "imatrix": "yes"}, {"outtype": "q2_k", "imatrix": "no"},
         {"outtype": "iq3_xxs", "low_disk": "yes", "imatrix_chunks": 0}, {"outtype": "f16", "imatrix": "yes"}]
CASES = combinations(MergeStage) + [c for c in ROUTE if c not in combinations(MergeStage)]
pytestmark = [pytest.mark.slow, pytest.mark.hub]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_merge_plan_equals_run(case, twin_env, tmp_path):
    stage = MergeStage(**{"output_dir": str(tmp_path), **case})
    result = check_plan_equals_run(stage)
    if result is not None:
        target = stage.plan().job.target  # planned again: the finished merge is recognised, same name
        assert target.exists() and (result.outputs[0] == target or target in result.outputs[0].parents)


def test_the_route_writes_the_low_bit_type_with_its_matrix(twin_env, tmp_path):
    """IQ3_XXS through the route: the GGUF is that type, quantized with the matrix kept beside it, and the
    intermediate is gone; the same form planned again recognises the finished output."""
    from helpers.gguf import gguf_type, read_metadata

    stage = MergeStage(output_dir=str(tmp_path / "out"), workspace=str(tmp_path / "drive"), outtype="iq3_xxs",
                       imatrix_chunks=2)
    plan = stage.plan()
    assert plan.fits and plan.job.route is not None and "importance-matrix route" in plan.summary()
    result = plan.run()
    target, matrix = result.outputs
    assert gguf_type(target).lower() == "iq3_xxs" and matrix.name.endswith(".imatrix.gguf")
    assert read_metadata(matrix, ("imatrix.chunk_count",))["imatrix.chunk_count"] == 2
    assert sorted(p.name for p in target.parent.glob("*intermediate*")) == []
    assert (tmp_path / "drive" / target.name).is_file() and (tmp_path / "drive" / matrix.name).is_file()
    assert (tmp_path / "drive" / f"{target.stem}.Modelfile").is_file()  # what `ollama create` needs beside it
    again = stage.plan().run()
    assert again.already_merged and again.outputs[0] == target
