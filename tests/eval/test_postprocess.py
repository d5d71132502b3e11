import math

import numpy as np

from vidsearch.eval.postprocess import dual_softmax, evaluate_similarity, softmax

# caption 1 claims video 1 much more strongly than caption 0 does
SIM = np.array([[0.5, 0.6],
                [0.1, 0.7]])


def test_dual_softmax_matches_the_formula():
    column_1 = [math.exp(60) / (math.exp(60) + math.exp(70)), math.exp(70) / (math.exp(60) + math.exp(70))]
    column_0 = [math.exp(50) / (math.exp(50) + math.exp(10)), math.exp(10) / (math.exp(50) + math.exp(10))]
    expected = SIM * np.array([[column_0[0], column_1[0]], [column_0[1], column_1[1]]])
    np.testing.assert_allclose(dual_softmax(SIM), expected, rtol=1e-12)
    np.testing.assert_allclose(dual_softmax(SIM, axis=1), dual_softmax(SIM.T, axis=0).T, rtol=1e-12)


def test_softmax_is_stable_for_large_scores():
    np.testing.assert_allclose(softmax(np.array([[1000.0, 1000.0]]), axis=1), [[0.5, 0.5]])


def test_raw_and_dsl_results_are_reported_separately():
    result = evaluate_similarity(SIM, np.array([0, 1]))
    assert result["raw"]["text_to_video"].r1 == 50.0  # caption 0 prefers video 1 on raw scores
    assert result["dsl"]["text_to_video"].r1 == 100.0  # dual softmax gives video 1 to caption 1
    assert result["raw"]["video_to_text"].r1 == 100.0  # each video scores its own caption highest
    assert result["dsl"]["video_to_text"].r1 == 100.0
    assert set(result) == {"raw", "dsl"} and set(result["dsl"]) == {"text_to_video", "video_to_text"}
