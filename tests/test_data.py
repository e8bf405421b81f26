"""Dataset schema, validation errors that name the fix, DSRL compatibility."""
import h5py
import numpy as np
import pytest
from conftest import make_dataset

from safefql_core.data import DatasetError, TensorBatches, fingerprint, load_dataset, save_dataset


def test_round_trip_and_fingerprint(tmp_path):
    data = make_dataset()
    save_dataset(tmp_path / "d.h5", data)
    back = load_dataset(tmp_path / "d.h5")
    np.testing.assert_array_equal(back.observations, data.observations)
    np.testing.assert_array_equal(back.margins, data.margins)
    assert fingerprint(back) == fingerprint(data)


def test_dsrl_file_without_margins_derives_them(tmp_path):
    data = make_dataset(margins=False)
    with h5py.File(tmp_path / "dsrl.h5", "w") as f:  # what a DSRL download looks like
        for key in ("observations", "next_observations", "actions", "rewards", "costs"):
            f[key] = getattr(data, key).astype(np.float64)
        f["terminals"] = data.terminals.astype(bool)
        f["timeouts"] = data.timeouts.astype(bool)
    back = load_dataset(tmp_path / "dsrl.h5")
    assert back.margins is None
    expected = np.where(data.costs > 0, 25.0, -1.0)
    np.testing.assert_array_equal(back.margin_signal(), expected)


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="offline_train.collect"):
        load_dataset(tmp_path / "nope.h5")


def test_truncated_file_is_refused(tmp_path):
    save_dataset(tmp_path / "d.h5", make_dataset())
    raw = (tmp_path / "d.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset(tmp_path / "cut.h5")


def test_missing_key_lists_what_is_there(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["observations"] = np.zeros((3, 2))
    with pytest.raises(DatasetError, match=r"lacks required key\(s\).*Keys found: \['observations'\]"):
        load_dataset(tmp_path / "bad.h5")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: setattr(d, "rewards", np.where(np.arange(20) == 7, np.nan, d.rewards).astype(np.float32)),
     r"'rewards' has 1 non-finite row\(s\) \(first: \[7\]\)"),
    (lambda d: setattr(d, "actions", d.actions * 3), "scaled to \\[-1, 1\\]"),
    (lambda d: setattr(d, "costs", d.costs[:5]), "'costs' has 5 rows"),
    (lambda d: setattr(d, "next_observations", d.next_observations[:, :2]), "next_observations"),
])
def test_bad_contents_are_refused(tmp_path, mutate, message):
    data = make_dataset()
    mutate(data)
    save_dataset(tmp_path / "d.h5", data)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path / "d.h5")


def test_timeouts_bootstrap_unless_flagged():
    import torch
    data = make_dataset()
    data.terminals[3] = 1
    default = TensorBatches(data, torch.device("cpu"), 0).tensors["masks"]
    flagged = TensorBatches(data, torch.device("cpu"), 0, timeout_is_terminal=True).tensors["masks"]
    assert default.tolist().count(0.0) == 1                   # only the true terminal
    assert flagged.tolist().count(0.0) == 3                   # + the two time-outs


def test_batches_are_a_function_of_the_seed():
    import torch
    data = make_dataset()
    a = TensorBatches(data, torch.device("cpu"), 5).sample(8)["rewards"]
    b = TensorBatches(data, torch.device("cpu"), 5).sample(8)["rewards"]
    assert torch.equal(a, b)


def test_n_step_windows_stop_at_episode_ends():
    import torch
    data = make_dataset()
    ends = np.flatnonzero((data.terminals > 0) | (data.timeouts > 0))
    batches = TensorBatches(data, torch.device("cpu"), 0, horizon=4)
    idx = torch.arange(len(data))
    w = batches._window(idx)
    to_end = np.array([ends[ends >= i][0] - i + 1 for i in range(len(data))])
    assert w["steps"].numpy().tolist() == np.minimum(to_end, 4).tolist()
    assert w["valid"].sum(dim=1).tolist() == w["steps"].tolist()
    last = idx + w["steps"].long() - 1   # the window bootstraps on its last step's next state
    assert torch.equal(w["next_observations"], batches.tensors["next_observations"][last])
    assert torch.equal(w["reward_seq"][:, 0], batches.tensors["rewards"])
    assert set(TensorBatches(data, torch.device("cpu"), 0).sample(4)) == set(batches.tensors)  # horizon 1: plain
    assert {"reward_seq", "margin_seq", "valid", "steps"} <= set(batches.sample(4))
