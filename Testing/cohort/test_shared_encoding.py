"""A cohort worker encoding several queries' slices in shared encoder batches gives the outputs of one query at a time.

Off by default (``CohortSettings.queries_encoded_together`` 1); on a GPU it fills the encoder's batches where queries
are short. Real hippocampus queries and the tiny SAM2 architecture with random weights, on the CPU.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from cohort_helpers import QUERIES
from conftest import HIPPOCAMPUS, TEST_IMAGE_SIZE, case_paths

from FateSAMLib.cohort.cases import Case
from FateSAMLib.cohort.runner import LocalPool, run_cohort
from FateSAMLib.cohort.worker import CohortSettings
from FateSAMLib.method.predictor import FateSamPredictor
from FateSAMLib.options import RunSettings
from FateSAMLib.progress import CancelToken, ignore_progress

RUN = RunSettings(random_weights=True, image_size=TEST_IMAGE_SIZE, device="cpu", encoder_batch_size=4)


def test_queries_encoded_together_give_the_same_labels_and_their_runs_encode_no_query_slice(tiny_model, tmp_path):
    support = case_paths(HIPPOCAMPUS, "hippocampus_001")
    cases = [Case(id=name, query=case_paths(HIPPOCAMPUS, name)[0]) for name in QUERIES]
    runs = {}
    for together in (1, 3):
        settings = CohortSettings(
            supports=(support,), output_dir=tmp_path / str(together), queries_encoded_together=together
        )
        pool = LocalPool(settings, lambda: FateSamPredictor(RUN, loaded=tiny_model))
        summary = run_cohort(cases, settings, pool, ignore_progress, CancelToken())
        assert summary["counts"]["done"] == len(cases)
        runs[together] = {record["id"]: record for record in summary["cases"]}
    for case in cases:
        alone, together = runs[1][case.id], runs[3][case.id]
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(sitk.ReadImage(together["output"])),
            sitk.GetArrayFromImage(sitk.ReadImage(alone["output"])),
        )
        query_slices = alone["encoder_passes"] - alone["support_slices_encoded"]
        assert query_slices > 0
        # Encoded beforehand, all three queries in shared batches: the run itself encodes no query slice.
        assert together["encoder_passes"] == together["support_slices_encoded"]
