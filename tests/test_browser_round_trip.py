"""The whole loop of issue 16 in real Chromium: a PyTorch CNN (Conv + BatchNorm, its input NHWC in the page) as a
trainable layers model (bridge.layers_route), fitted a few epochs in the page, saved to the upload endpoint of
`bridge serve --accept-uploads`, and the uploaded folder imported back into a fresh PyTorch module
(bridge.layers_route.import_weights), which must then predict what the trained model predicted in Chromium.

Tolerance: 1e-4 absolute between PyTorch (eval, the imported weights, BatchNorm's moving statistics as TF.js
updated them) and TF.js's cpu predictions in the page, in the web layout. Must-fail twin: the module with the
weights from before training is more than 1e-3 away, so the comparison sees a round trip that lost the training.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.runtime import browser as browser_rt
from bridge.runtime.node import LayersFit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layers_route_models import CnnClassifier  # noqa: E402

_STATUS = browser_rt.browser_status()
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not _STATUS.ok, reason="; ".join(_STATUS.problems) or "browser ready")]
ATOL = 1e-4
MOVED = 1e-3  # the fit must move the predictions by more than this, else the test would prove nothing


class RoundTrip:
    """The CNN converted, trained and uploaded in Chromium once for the module's tests."""

    def __init__(self, root: Path) -> None:
        from bridge.layers_route import LayersRouteOptions, write_layers_route

        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        self.module = CnnClassifier().eval()
        self.inputs = [torch.randn(4, 3, 16, 16, generator=gen)]
        self.folder = root / "layers"
        result = write_layers_route(self.module, self.inputs, self.folder, LayersRouteOptions())
        self.interface = result.conversion.interface
        port, out = self.interface.inputs[0], self.interface.outputs[0]
        web_x = port.to_web(self.inputs[0].numpy())
        y = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
        fit = LayersFit(x={port.name: web_x}, y={out.name: y}, loss="mean_squared_error", optimizer="adam",
                        learning_rate=0.01, epochs=4, batch_size=4)
        self.output_name = out.name
        self.run = browser_rt.train_and_save_in_browser(self.folder, [{port.name: web_x}], fit,
                                                        schemes=("http",), upload_dir=root / "uploads")

    def predict(self, module: torch.nn.Module) -> np.ndarray:
        """The module's eval prediction of the example inputs, in the web layout."""
        module.eval()
        with torch.no_grad():
            return self.interface.outputs[0].to_web(module(*self.inputs).numpy())


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> RoundTrip:
    return RoundTrip(tmp_path_factory.mktemp("round_trip"))


def test_the_page_trained_and_uploaded(round_trip: RoundTrip) -> None:
    run = round_trip.run
    assert run.loss[-1] < run.loss[0]
    copy = run.copies["http"]
    assert copy.status == "ok" and copy.identical, copy.reason
    assert run.upload_folder is not None and (run.upload_folder / "model.json").is_file()


def test_uploaded_weights_in_pytorch_predict_what_the_page_predicted(round_trip: RoundTrip) -> None:
    from bridge.layers_route import import_weights

    assert round_trip.run.upload_folder is not None
    trained = CnnClassifier()
    import_weights(round_trip.run.upload_folder, trained, load=True)
    page = round_trip.run.trained_outputs[0][round_trip.output_name]
    assert np.max(np.abs(page - round_trip.predict(round_trip.module))) > MOVED  # the fit moved the predictions
    assert np.max(np.abs(round_trip.predict(trained) - page)) <= ATOL
    # BatchNorm's moving statistics came back as TF.js updated them during fit, not the module's own
    assert not torch.equal(trained.features[1].running_mean, round_trip.module.features[1].running_mean)


def test_the_untrained_weights_do_not_match_the_page(round_trip: RoundTrip) -> None:
    """Must-fail twin: the folder written before training, imported, is far from what the page predicted."""
    from bridge.layers_route import import_weights

    before = CnnClassifier()
    import_weights(round_trip.folder, before, load=True)
    page = round_trip.run.trained_outputs[0][round_trip.output_name]
    assert np.max(np.abs(round_trip.predict(before) - page)) > MOVED
