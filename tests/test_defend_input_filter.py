"""input_filter: an input detector (STRIP) fitted on the clean set refuses triggered inputs at inference."""

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.defend import get
from poisonlab.defend.base import Defended
from poisonlab.defend.evaluate import REJECTED, backdoor_scores, guarded_predict
from poisonlab.rng import generator
from poisonlab.training import predict
from test_detect_common import one_thread, single_thread  # noqa: F401 (autouse)
from test_detect_strip import trojaned_linear_model


def test_input_filter_rejects_triggered_inputs_and_keeps_clean_ones():
    # STRIP's own tiny backdoor (test_detect_strip): pixel (3, 3) sends a linear model to class 0
    model = trojaned_linear_model()
    g = generator(0, "input-filter-data")
    x = 0.5 * torch.rand(600, 1, 4, 4, generator=g)
    x[..., 3, 3] = 0.0
    labelled = Dataset(x, predict(model, x), ("0", "1", "2", "3"), "linear")   # the model's own labels: C-Acc 1
    clean, held = labelled.subset(torch.arange(200)), labelled.subset(torch.arange(200, 600))
    trig = held.replace(x=held.x.clone().index_put_((torch.arange(400), torch.tensor(0), torch.tensor(3),
                                                      torch.tensor(3)), torch.tensor(1.0)))
    before = backdoor_scores(Defended(model), held, trig, 0)
    out = get("input_filter", detector={"name": "strip", "params": {"n_overlays": 20, "frr": 0.05}}).defend(
        model=model, clean=clean)
    assert out.model is not model and torch.equal(out.model[1].weight, model[1].weight)
    assert torch.equal(guarded_predict(out, trig.x) == REJECTED, out.reject(trig.x))  # reject = the detector's flags
    after = backdoor_scores(out, held, trig, 0)
    assert before.attack_success_rate == 1.0 and after.attack_success_rate == 0.0
    assert after.clean_accuracy >= 0.9 and after.rejected_clean <= 0.1   # about frr of clean inputs refused
