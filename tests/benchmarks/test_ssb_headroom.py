"""The selection-bias headroom diagnostic runs on generated data and reports both fits."""


from benchmarks.ssb_headroom import headroom, main


def test_headroom_reports_auc_and_pcoc_of_all_three_fits(small_generated):
    out = headroom(small_generated)
    for name in ("clicked_only", "random_same_size", "ssb_free"):
        assert 0.5 < out[f"{name}_entire_space_cvr_auc"] < 1.0
        assert out[f"{name}_pcoc"] > 0
    assert out["train_counterfactual_purchases"] > out["train_clicked_purchases"]


def test_headroom_needs_three_days(tmp_path, capsys):
    assert main(["--data", str(tmp_path)]) == 2
    assert "need at least 3 day files" in capsys.readouterr().err
