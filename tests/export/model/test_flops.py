import pytest

from mnt.export.model.checkpoint import init_reference
from mnt.export.model.config import PRESETS
from mnt.export.model.flops import component_costs
from tests.tolerances import GENERATOR_K8_OVER_K1_MAX, PAPER_GENERATOR_GFLOP


@pytest.fixture(scope="module")
def paper_costs():
    return {(r.component, r.k): r for r in component_costs(init_reference(PRESETS["paper"], 0))}


def test_paper_generator_is_near_200_gflop_per_frame(paper_costs):
    low, high = PAPER_GENERATOR_GFLOP
    assert low <= paper_costs["generator", 1].gflops <= high


def test_frame_phase_barely_depends_on_k(paper_costs):
    ratio = paper_costs["generator", 8].gflops / paper_costs["generator", 1].gflops
    assert 1.0 <= ratio <= GENERATOR_K8_OVER_K1_MAX


def test_target_phase_scales_with_k(paper_costs):
    ratio = paper_costs["target_encoder", 8].gflops / paper_costs["target_encoder", 1].gflops
    assert 7.9 <= ratio <= 8.1


def test_paper_disentangler_is_a_resnet50(paper_costs):
    # ResNet-50 has 23.5 M parameters without its classifier; the MLP adds ~0.6 M.
    assert 23.5e6 < paper_costs["landmark_disentangler", 1].params < 24.5e6
