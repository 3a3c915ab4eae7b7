import numpy as np
import pytest

from labelexplorer import LabelPrediction
from labelexplorer.exceptions import LabelError, ShapeError


def test_total_std_combines_known_parts_and_nan_means_unknown():
    pred = LabelPrediction(["TEFF", "LOGG"], [[5000.0, 2.0]], model_std=[[30.0, np.nan]],
                           predictive_std=[[40.0, np.nan]])
    assert pred["TEFF"].total_std[0] == pytest.approx(50.0)
    assert np.isnan(pred["LOGG"].total_std[0])


def test_label_lookup_accepts_user_spellings_and_suggests():
    pred = LabelPrediction(["[Fe/H]"], [[-0.3]])
    assert pred["fe_h"].mean[0] == -0.3
    with pytest.raises(LabelError, match="not predicted"):
        pred["MG_FE"]


def test_selection_and_concatenation_keep_flags_and_ids():
    pred = LabelPrediction(["TEFF"], [[1.0], [2.0], [3.0]], ids=["a", "b", "c"],
                           flags={"low_snr": [True, False, True]})
    sub = pred[np.array([True, False, True])]
    assert sub.ids.tolist() == ["a", "c"] and sub.flags["low_snr"].all()
    joined = LabelPrediction.concatenate([sub, pred[1:2]])
    assert joined.ids.tolist() == ["a", "c", "b"] and joined.flags["low_snr"].tolist() == [True, True, False]


def test_tables_have_the_documented_columns():
    pred = LabelPrediction(["LOGG"], [[2.5]], flags={"outside_training_set": [False]})
    assert pred.to_pandas().columns.tolist() == ["ID", "LOGG", "LOGG_ERR", "LOGG_MODEL_STD", "LOGG_PRED_STD",
                                                 "FLAG_OUTSIDE_TRAINING_SET"]


@pytest.mark.parametrize("kwargs", [{"model_std": [[-1.0]]}, {"predictive_std": [[1.0, 2.0]]}],
                         ids=["negative-std", "wrong-shape"])
def test_bad_uncertainties_are_refused(kwargs):
    with pytest.raises(ShapeError):
        LabelPrediction(["TEFF"], [[5000.0]], **kwargs)
