"""COCO AP50 computed with pycocotools' COCOeval directly: a reference independent of
univ_core.eval.metrics (which wraps torchmetrics)."""


def coco_ap50(predictor, pairs, modality: str) -> float:
    """AP50 of ``predictor`` on ``pairs`` (modality 'rgb' | 'ir') by COCOeval directly."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, truth, found = [], [], []
    for index in range(len(pairs)):
        sample = pairs[index]
        h, w = sample['thermal'].shape[:2]
        key, mode = modality, {'rgb': 'rgb', 'ir': 'thermal'}[modality]
        images.append({'id': index, 'height': h, 'width': w})
        for box, label in zip(sample[f'boxes_{key}'], sample[f'labels_{key}'], strict=True):
            x0, y0, x1, y1 = map(float, box)
            truth.append({'id': len(truth) + 1, 'image_id': index, 'category_id': int(label),
                          'bbox': [x0, y0, x1 - x0, y1 - y0], 'area': (x1 - x0) * (y1 - y0),
                          'iscrowd': 0})
        det = predictor.predict(sample['rgb'], sample['thermal'], mode, scoring=True)
        for box, score, label in zip(det.detections.boxes, det.detections.scores,
                                     det.detections.class_ids, strict=True):
            x0, y0, x1, y1 = map(float, box)
            found.append({'image_id': index, 'category_id': int(label),
                          'bbox': [x0, y0, x1 - x0, y1 - y0], 'score': float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {'images': images, 'annotations': truth, 'categories': [
            {'id': i} for i in range(len(predictor.det_classes))]}
        gt.createIndex()
        run = COCOeval(gt, gt.loadRes(found) if found else COCO(), 'bbox')
        run.evaluate()
        run.accumulate()
        run.summarize()
    return float(run.stats[1])
