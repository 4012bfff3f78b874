"""Model Garden experiments built once per test session and shared by the experiment tests
(`garden_cases`): one demo set as TFRecords (48 training, 32 validation images), and one tiny
detector of each kind trained on it by Model Garden's own trainer."""

import pytest

from tests.models import garden_cases


@pytest.fixture(scope="session")
def garden_data(tmp_path_factory):
    """The root holding ``demo/`` (`garden_cases.build_records`)."""
    return garden_cases.build_records(tmp_path_factory.mktemp("garden_data"))


@pytest.fixture(scope="session")
def retinanet_trained(tmp_path_factory, garden_data):
    """The shipped ``retinanet_resnet18_demo`` trained 150 steps: ``(data root, --config-file,
    model_dir)``. Before about 150 steps its head scores the demo's black canvases alike, and
    equal scores make the order of equal candidates matter (docs/models.md, "Tied scores")."""
    return garden_cases.train_experiment(tmp_path_factory.mktemp("retinanet"), garden_data, "retinanet_resnetfpn_coco",
                                         "retinanet_resnet18_demo", steps=150)


@pytest.fixture(scope="session")
def fasterrcnn_trained(tmp_path_factory, garden_data):
    """The shipped ``fasterrcnn_resnet18_demo`` trained 100 steps: ``(data root, --config-file,
    model_dir)``."""
    return garden_cases.train_experiment(tmp_path_factory.mktemp("fasterrcnn"), garden_data, "fasterrcnn_resnetfpn_coco",
                                         "fasterrcnn_resnet18_demo", steps=100)
