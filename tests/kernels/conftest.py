"""The per-op modules' shared fixture: the CUDA kernels beside the host reference they
must follow (skips without a GPU)."""

import pytest

from tests.kernels.implementations import implementation


@pytest.fixture(scope="module")
def cuda_and_host(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cuda-host")
    return implementation("cuda", folder, {}), implementation("host", folder, {})
