"""Stand-in Predictors for fleet tests, importable by Ray workers (test/ is on their path).

:class:`JitteredTruth` finds msrs_mini's boxes slightly moved (mAP well above 0, so equal
scores mean something); it can kill its own worker process, or interrupt the run, after a
number of predictions (one per ``predict`` call, one per mode of ``predict_modes``), to
test retries and resuming for real.
"""

import os
import signal
from pathlib import Path

import numpy as np

from univ_core.data.labelled import open_labelled_dataset
from univ_core.inference import Detections, Prediction, PredictorConfig

CLASSES = ['person', 'bicycle', 'car']


class JitteredTruth:
    """The Predictor interface replay uses; boxes = the pair's truth moved by ~3 px.

    Args:
        root: the msrs_mini folder.
        pairs: how many of its first pairs the bags hold.
        kill_after: SIGKILL this process at that ``predict`` call, once per ``marker`` file (the
            first worker to get there writes its pid into it; retries find it and live).
        interrupt_after: raise KeyboardInterrupt (a Ctrl-C) at that call.
        marker: the file that makes the kill happen once.
        kill_on_pairs: SIGKILL this process on these pair indices too, once each (the files
            ``<marker>.<index>``), wherever and whenever they come.
    """

    seg_classes, det_classes = None, CLASSES
    palette = np.zeros((0, 3), np.uint8)
    config = PredictorConfig()

    def __init__(self, root: str, pairs: int, kill_after: int | None = None,
                 interrupt_after: int | None = None, marker: str | None = None,
                 kill_on_pairs: tuple[int, ...] = ()) -> None:
        dataset = open_labelled_dataset(Path(root), 'msrs_det', 'train')
        self.samples = {dataset[i]['rgb'].tobytes(): dataset[i] for i in range(pairs)}
        self.index = {key: i for i, key in enumerate(self.samples)}
        self.kill_after, self.interrupt_after, self.marker = kill_after, interrupt_after, marker
        self.kill_on_pairs = kill_on_pairs
        self.calls = 0

    def _maybe_stop(self, rgb) -> None:
        self.calls += 1
        if self.calls == self.interrupt_after:
            raise KeyboardInterrupt
        if self.calls == self.kill_after:
            self._kill_once(self.marker)
        index = self.index[np.ascontiguousarray(rgb).tobytes()]
        if index in self.kill_on_pairs:
            self._kill_once(f'{self.marker}.{index}')

    @staticmethod
    def _kill_once(marker: str) -> None:
        """SIGKILL this process unless ``marker`` exists (then create it with our pid)."""
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # a worker was killed here already
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    def predict(self, rgb, thermal, mode, scoring=False):
        self._maybe_stop(rgb)
        return self._jittered(rgb, mode)

    def predict_modes(self, rgb, thermal, modes, scoring=False):
        """Every mode of one pair; counts as one call per mode, as ``predict`` per mode would."""
        predictions = {}
        for mode in modes:
            self._maybe_stop(rgb)
            predictions[mode] = self._jittered(rgb, mode)
        return predictions

    def _jittered(self, rgb, mode):
        sample = self.samples[np.ascontiguousarray(rgb).tobytes()]
        key = {'rgb': 'rgb', 'thermal': 'ir'}.get(mode, 'rgb')
        boxes, labels = sample[f'boxes_{key}'], sample[f'labels_{key}']
        rng = np.random.default_rng(len(boxes))
        moved = (boxes + rng.normal(0, 3, boxes.shape)).astype(np.float32)
        scores = rng.uniform(0.3, 1, len(boxes)).astype(np.float32)
        names = [CLASSES[k] for k in labels]
        return Prediction(None, None, Detections(moved, labels, scores, names), mode)
