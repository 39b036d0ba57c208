"""`univ replay` on a bag of the real msrs_mini: outputs, report, scores, damaged bags, online."""

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from toy import write_toy_model

from univ_core.data.labelled import open_labelled_dataset
from univ_core.eval.metrics import DetectionMeter
from univ_core.inference import Detections, Prediction, PredictorConfig, load_predictor
from univ_ros import cli
from univ_ros.replay import topics as T
from univ_ros.replay.bag_from_pairs import BagConfig, write_bag
from univ_ros.replay.bagio import BagInput, BagOutput, stamp_ns, typestore
from univ_ros.replay.offline import ReplayConfig, replay_offline
from univ_ros.replay.samples import open_samples
from univ_ros.replay.scoring import boxes_from_msg, fused_truth

PAIRS = 5
SCORE_THRESHOLD = 0.05  # the random toy model then gives boxes to compare
REPORT_KEYS = {'kind', 'partial', 'error', 'bag', 'model', 'mode', 'topics', 'pairs',
               'latency_definition', 'latency_ms', 'throughput_hz', 'drop_rate', 'wall_s',
               'scores', 'outputs'}


def read_bag(bag: Path) -> dict[str, list]:
    """topic -> [(bag time ns, message)] with plain rosbags."""
    out: dict[str, list] = {}
    with Reader(bag) as reader:
        for connection, timestamp, raw in reader.messages():
            msg = typestore().deserialize_cdr(raw, connection.msgtype)
            out.setdefault(connection.topic, []).append((timestamp, msg))
    return out


@pytest.fixture(scope='module')
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('replay')


@pytest.fixture(scope='module')
def toy_model(work) -> Path:
    return write_toy_model(work / 'toy.safetensors')


@pytest.fixture(scope='module')
def config_file(work, toy_model) -> Path:
    path = work / 'params.yaml'
    path.write_text(f'/**:\n  ros__parameters:\n    model: {toy_model}\n    device: cpu\n'
                    '    precision: fp32\n'
                    f'    score_threshold: {SCORE_THRESHOLD}\n')
    return path


@pytest.fixture(scope='module')
def dataset(data_dir):
    return open_labelled_dataset(data_dir / 'msrs_mini', 'msrs_det', 'train')


@pytest.fixture(scope='module')
def msrs_bag(data_dir, work) -> Path:
    source = open_samples(data_dir / 'msrs_mini', 'msrs', 'train', PAIRS)
    write_bag(source, work / 'msrs_bag', BagConfig(), progress=False)
    return work / 'msrs_bag'


@pytest.fixture(scope='module')
def offline_out(msrs_bag, config_file, work) -> Path:
    out = work / 'offline'
    assert cli.main(['replay', str(msrs_bag), '--out', str(out), '--config', str(config_file),
                     '--quiet']) == 0
    return out


@pytest.fixture(scope='module')
def predictor(toy_model):
    return load_predictor(PredictorConfig(model=str(toy_model), device='cpu', precision='fp32',
                                          score_threshold=SCORE_THRESHOLD))


def test_output_bag_has_one_mask_and_detections_per_pair_with_source_headers(offline_out,
                                                                             msrs_bag):
    inputs, outputs = read_bag(msrs_bag), read_bag(offline_out / 'bag')
    sources = [msg.header for _, msg in inputs[T.RGB_IMAGE]]  # fused: the RGB image's frame
    for topic in (T.SEGMENTATION, T.SEGMENTATION_COLOR, T.DETECTIONS, T.DETECTIONS_IMAGE):
        headers = [(time, msg.header) for time, msg in outputs[topic]]
        assert len(headers) == PAIRS, topic
        for (time, header), source in zip(headers, sources, strict=True):
            assert stamp_ns(header) == stamp_ns(source) == time
            assert header.frame_id == source.frame_id == T.RGB_FRAME
    mask = outputs[T.SEGMENTATION][0][1]
    assert (mask.encoding, mask.height, mask.width) == ('mono8', 480, 640)
    for topic in (T.RGB_IMAGE, T.THERMAL_IMAGE, T.RGB_INFO, T.GT_RGB_DETECTIONS,
                  T.GT_THERMAL_DETECTIONS, T.GT_DETECTION_LABELS):
        assert len(outputs[topic]) == len(inputs[topic]), topic  # inputs copied


def test_output_detections_equal_the_predictor_on_the_same_images(offline_out, dataset,
                                                                  predictor):
    outputs = read_bag(offline_out / 'bag')[T.DETECTIONS]
    for index, (_, msg) in enumerate(outputs):
        sample = dataset[index]
        direct = predictor.predict(sample['rgb'], sample['thermal'], 'fused').detections
        boxes, names, scores = boxes_from_msg(msg)
        assert len(names) > 0 and names == direct.class_names
        np.testing.assert_allclose(boxes, direct.boxes, atol=1e-3)
        np.testing.assert_allclose(scores, direct.scores, atol=1e-6)


def test_report_json_md_and_plots(offline_out):
    report = json.loads((offline_out / 'report.json').read_text())
    assert REPORT_KEYS <= set(report)
    assert report['kind'] == 'offline' and report['partial'] is False
    assert report['pairs'] == {'synchronised': PAIRS, 'processed': PAIRS, 'dropped': 0,
                               'sync_misses': 0, 'bad_inputs': 0, 'first_bad_input': None}
    assert report['latency_ms']['count'] == PAIRS
    assert 0 < report['latency_ms']['p50'] <= report['latency_ms']['p95'] <= \
        report['latency_ms']['p99']
    assert set(report['scores']['detection']) == {'fused', 'rgb', 'thermal'}
    assert report['scores']['detection']['fused']['images'] == PAIRS
    assert set(report['scores']['detection']['rgb']['ap50']) == {'person', 'bicycle', 'car'}
    text = (offline_out / 'report.md').read_text()
    assert '| fused |' in text and 'p95' in text
    assert report['precision'] == 'fp32' and '- precision: fp32' in text  # what ran, stated
    for name in ('latency.png', 'per_class.png', *report['outputs']['overlays']):
        assert (offline_out / name).read_bytes()[:4] == b'\x89PNG', name
    assert len(report['outputs']['overlays']) == 4


def direct_map(predict, dataset, mode: str) -> dict:
    """DetectionMeter over the first PAIRS images, ground truth as the replay scores it."""
    meter = DetectionMeter(['person', 'bicycle', 'car'])
    for index in range(PAIRS):
        sample = dataset[index]
        dets = predict(sample['rgb'], sample['thermal'], mode).detections
        rgb = {'boxes': sample['boxes_rgb'], 'labels': sample['labels_rgb']}
        ir = {'boxes': sample['boxes_ir'], 'labels': sample['labels_ir']}
        target = {'rgb': rgb, 'thermal': ir, 'fused': fused_truth(rgb, ir)}[mode]
        meter.update([{'boxes': dets.boxes, 'scores': dets.scores, 'labels': dets.class_ids}],
                     [target])
    return meter.compute()


def assert_same_scores(reported: dict, direct: dict) -> None:
    for key in ('map', 'map50', 'map75'):
        assert reported[key] == pytest.approx(direct[key], abs=1e-9), key
    for name, value in direct['ap50'].items():
        assert reported['ap50'][name] == (None if np.isnan(value) else pytest.approx(value))


def test_report_map_equals_metrics_of_the_predictor_on_the_images(offline_out, dataset,
                                                                  predictor):
    report = json.loads((offline_out / 'report.json').read_text())
    for mode in ('fused', 'rgb', 'thermal'):
        assert_same_scores(report['scores']['detection'][mode],
                           direct_map(predictor.predict, dataset, mode))


class JitteredTruth:
    """A predictor that finds the dataset's boxes, slightly moved: a model with mAP > 0."""

    seg_classes, det_classes = None, ['person', 'bicycle', 'car']
    palette = np.zeros((0, 3), np.uint8)
    config = PredictorConfig()

    def __init__(self, dataset) -> None:
        self.samples = {dataset[i]['rgb'].tobytes(): dataset[i] for i in range(PAIRS)}

    def predict_modes(self, rgb, thermal, modes, scoring=False):
        return {mode: self.predict(rgb, thermal, mode, scoring) for mode in modes}

    def predict(self, rgb, thermal, mode, scoring=False):
        sample = self.samples[np.ascontiguousarray(rgb).tobytes()]
        key = {'rgb': 'rgb', 'thermal': 'ir'}.get(mode, 'rgb')
        boxes, labels = sample[f'boxes_{key}'], sample[f'labels_{key}']
        rng = np.random.default_rng(len(boxes))
        moved = (boxes + rng.normal(0, 3, boxes.shape)).astype(np.float32)
        scores = rng.uniform(0.3, 1, len(boxes)).astype(np.float32)
        names = [self.det_classes[k] for k in labels]
        return Prediction(None, None, Detections(moved, labels, scores, names), mode)


def test_report_map_joins_ground_truth_by_stamp(msrs_bag, dataset, work):
    oracle = JitteredTruth(dataset)
    report = replay_offline(msrs_bag, work / 'oracle', oracle, ReplayConfig(progress=False))
    for mode in ('fused', 'rgb', 'thermal'):
        direct = direct_map(oracle.predict, dataset, mode)
        assert direct['map50'] > 0.5
        assert_same_scores(report['scores']['detection'][mode], direct)


def test_existing_output_refused_then_replaced_identically(offline_out, msrs_bag, config_file,
                                                           capsys):
    argv = ['replay', str(msrs_bag), '--out', str(offline_out), '--config', str(config_file),
            '--quiet']
    first = [bytes(typestore().serialize_cdr(m, T.DETECTION_ARRAY)) for _, m in
             read_bag(offline_out / 'bag')[T.DETECTIONS]]
    assert cli.main(argv) == 1
    assert 'exists; pass --force' in capsys.readouterr().err
    assert cli.main([*argv, '--force']) == 0
    again = [bytes(typestore().serialize_cdr(m, T.DETECTION_ARRAY)) for _, m in
             read_bag(offline_out / 'bag')[T.DETECTIONS]]
    assert again == first  # deterministic


def chunk_end(path, fraction: float) -> int:
    """The end of the last whole top-level MCAP record before ``fraction`` of the file."""
    data = path.read_bytes()
    at, end = 8, 8  # after the magic
    while at + 9 <= len(data) * fraction:
        at += 9 + struct.unpack_from('<Q', data, at + 1)[0]
        end = at if at <= len(data) * fraction else end
    return end


@pytest.mark.parametrize('zero_tail', [0, 4096], ids=['cut', 'cut_then_zero_filled'])
def test_truncated_mcap_bag_gives_partial_report(msrs_bag, config_file, work, capsys,
                                                 zero_tail):
    # a crash or power loss often leaves zero-filled blocks after the last written byte
    bag = work / f'truncated{zero_tail}'
    shutil.copytree(msrs_bag, bag)
    storage = bag / 'msrs_bag.mcap'
    cut = chunk_end(storage, 0.6) if zero_tail else int(storage.stat().st_size * 0.6)
    os.truncate(storage, cut)
    with storage.open('ab') as file:
        file.write(bytes(zero_tail))
    out = work / f'truncated_out{zero_tail}'
    assert cli.main(['replay', str(bag), '--out', str(out), '--config', str(config_file),
                     '--quiet']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'Traceback' not in err[0]
    assert f'{storage} is truncated or corrupt' in err[0] and 'after' in err[0]
    assert 'partial report' in err[0]
    report = json.loads((out / 'report.json').read_text())
    assert report['partial'] is True and 'truncated' in report['error']
    assert 0 < report['pairs']['processed'] < PAIRS
    assert '**PARTIAL**' in (out / 'report.md').read_text()
    assert len(read_bag(out / 'bag')[T.DETECTIONS]) == report['pairs']['processed']


def test_overlays_spread_over_pairs_when_one_camera_runs_faster(msrs_bag, work, toy_model):
    """RGB at twice the thermal rate: 10 RGB images, 5 pairs, and still the 4 overlays asked."""
    bag = work / 'rgb_twice'
    with BagInput(msrs_bag) as source, BagOutput(bag) as target:
        for topic, info in source.topics.items():
            target.add_topic(topic, info.msgtype)
        for topic, time, raw in source.messages(list(source.topics)):
            target.write_raw(topic, time, raw)
            if topic == T.RGB_IMAGE:  # an unpaired RGB frame half a period later
                msg = typestore().deserialize_cdr(raw, T.IMAGE)
                later = stamp_ns(msg.header) + 10**9 // 60
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(later, 10**9)
                target.write(topic, time + 10**9 // 60, msg)
    out = work / 'rgb_twice_out'
    assert cli.main(['replay', str(bag), '--out', str(out), '--model', str(toy_model),
                     '--quiet', '--overlays', '4']) == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['images']['rgb'] == 2 * PAIRS and report['pairs']['processed'] == PAIRS
    assert len(report['outputs']['overlays']) == 4


def test_slow_cameras_pair_as_the_node_pairs_them(data_dir, work, toy_model):
    """5 Hz cameras, thermal 60 ms after RGB: the node's default sync_slop 0 (auto: half the
    faster camera's period, 100 ms) pairs every frame; replay used a fixed 1/60 s: none."""
    source = open_samples(data_dir / 'msrs_mini', 'msrs', 'train', 3)
    bag = work / 'slow_cameras'
    write_bag(source, bag, BagConfig(rate=5.0, skew_ms=60.0), progress=False)
    params = work / 'slow_params.yaml'  # sync_slop 0.0 as the shipped config/perception.yaml
    params.write_text(f'/**:\n  ros__parameters:\n    model: {toy_model}\n    device: cpu\n'
                      '    precision: fp32\n    sync_slop: 0.0\n')
    for name, extra in (('auto', []), ('fixed', ['--slop', str(1 / 60)])):
        out = work / f'slow_{name}'
        code = cli.main(['replay', str(bag), '--out', str(out), '--config', str(params),
                         '--quiet', *extra])
        report = json.loads((out / 'report.json').read_text()) if code == 0 else None
        if name == 'auto':
            assert code == 0 and report['pairs']['synchronised'] == 3
        else:  # an explicit window narrower than the skew pairs nothing
            assert report is None or report['pairs']['synchronised'] == 0


def test_scores_do_not_depend_on_bag_log_time(msrs_bag, offline_out, config_file, work):
    # a re-recorded or sim-time bag: every message logged 10 s after its header stamp
    shifted = work / 'log_time_shifted'
    with BagInput(msrs_bag) as source, BagOutput(shifted) as target:
        for topic, info in source.topics.items():
            target.add_topic(topic, info.msgtype)
        for topic, time, raw in source.messages(list(source.topics)):
            target.write_raw(topic, time + 10 * 10**9, raw)
    out = work / 'log_time_shifted_out'
    assert cli.main(['replay', str(shifted), '--out', str(out), '--config', str(config_file),
                     '--quiet']) == 0
    report = json.loads((out / 'report.json').read_text())
    expected = json.loads((offline_out / 'report.json').read_text())
    assert report['scores'] == expected['scores']
    assert report['scores']['detection']['fused']['images'] == PAIRS


def test_online_warmup_stamps_never_reach_the_bags(msrs_bag):
    from univ_ros.replay.online import OnlineConfig, _warmup_pairs

    config = OnlineConfig()
    with BagInput(msrs_bag) as bag:
        first = {t: min(stamp_ns(typestore().deserialize_cdr(raw, T.IMAGE).header)
                        for _, _, raw in bag.messages([t]))
                 for t in (config.rgb_topic, config.thermal_topic)}
        warmup = _warmup_pairs(bag, config)
        stamps = [{t: stamp_ns(typestore().deserialize_cdr(raw, T.IMAGE).header)
                   for t, raw in next(warmup).items()} for _ in range(400)]  # ~80 s of waiting
    for topic, bag_first in first.items():
        assert max(s[topic] for s in stamps) <= bag_first - 10**9
        assert stamps[1][topic] > stamps[0][topic]  # forward while it can


def test_truncated_sqlite3_bag_is_named(data_dir, work, toy_model, capsys):
    bag = work / 'sqlite_bag'
    source = open_samples(data_dir / 'msrs_mini', 'msrs', 'train', 2)
    write_bag(source, bag, BagConfig(storage='sqlite3'), progress=False)
    storage = bag / 'sqlite_bag.db3'
    os.truncate(storage, storage.stat().st_size // 2)
    assert cli.main(['replay', str(bag), '--out', str(work / 'sq_out'), '--model',
                     str(toy_model), '--quiet']) == 1
    err = capsys.readouterr().err.strip()
    assert str(bag) in err and 'truncated or corrupt' in err and 'Traceback' not in err


@pytest.mark.parametrize('problem', ['empty', 'camera_info'])
def test_a_camera_topic_empty_or_not_image_is_named(msrs_bag, work, toy_model, capsys, problem):
    bag = work / f'thermal_{problem}'
    thermal_type = T.CAMERA_INFO if problem == 'camera_info' else T.IMAGE
    with BagInput(msrs_bag) as source, BagOutput(bag) as target:
        target.add_topic(T.RGB_IMAGE, T.IMAGE)
        target.add_topic(T.THERMAL_IMAGE, thermal_type)
        for topic, time, raw in source.messages([T.RGB_IMAGE]):
            target.write_raw(topic, time, raw)
        if problem == 'camera_info':  # e.g. a remapping mistake: the info topic as the image
            for _, time, raw in source.messages([T.THERMAL_INFO]):
                target.write_raw(T.THERMAL_IMAGE, time, raw)
    for argv in (['replay', str(bag)], ['replay', str(bag), '--rate', '1'],
                 ['autolabel', str(bag)]):
        out = work / f'thermal_{problem}_out'
        assert cli.main([*argv, '--out', str(out), '--model', str(toy_model), '--quiet']
                        if argv[0] == 'replay' else [*argv, '--out', str(out), '--quiet']) == 1
        err = capsys.readouterr().err.strip()
        assert 'Traceback' not in err and f'camera topic {T.THERMAL_IMAGE} holds' in err, err
        assert not out.exists()


@pytest.fixture(scope='module')
def png_bag(data_dir, work) -> Path:
    """The msrs_bag's pairs as CompressedImage (PNG, lossless) on <camera>/image_raw/compressed."""
    source = open_samples(data_dir / 'msrs_mini', 'msrs', 'train', PAIRS)
    write_bag(source, work / 'png_bag', BagConfig(transport='png'), progress=False)
    return work / 'png_bag'


COMPRESSED_TOPICS = ['--rgb-topic', f'{T.RGB_IMAGE}/compressed', '--thermal-topic',
                     f'{T.THERMAL_IMAGE}/compressed']


def test_a_compressed_bag_replays_like_the_raw_one(png_bag, offline_out, config_file, work):
    with BagInput(png_bag) as bag:
        assert bag.topics[f'{T.RGB_IMAGE}/compressed'].msgtype == T.COMPRESSED_IMAGE
        assert T.RGB_IMAGE not in bag.topics
    out = work / 'png_offline'
    assert cli.main(['replay', str(png_bag), '--out', str(out), '--config', str(config_file),
                     '--quiet', *COMPRESSED_TOPICS]) == 0
    report = json.loads((out / 'report.json').read_text())
    raw = json.loads((offline_out / 'report.json').read_text())
    assert report['pairs']['processed'] == PAIRS and report['pairs']['bad_inputs'] == 0
    assert report['scores'] == raw['scores']  # PNG is lossless: the same pixels, the same boxes
    mask = read_bag(out / 'bag')[T.SEGMENTATION][0][1]
    assert (mask.height, mask.width) == (480, 640)


def test_a_compressed_topic_that_does_not_decode_is_counted_not_fatal(png_bag, work,
                                                                     toy_model):
    bag = work / 'png_junk'
    thermal = f'{T.THERMAL_IMAGE}/compressed'
    with BagInput(png_bag) as source, BagOutput(bag) as target:
        for topic in (f'{T.RGB_IMAGE}/compressed', thermal):
            target.add_topic(topic, T.COMPRESSED_IMAGE)
        for topic, time, raw in source.messages([f'{T.RGB_IMAGE}/compressed', thermal]):
            if topic == thermal and time == min(t for _, t, _ in source.messages([thermal])):
                msg = typestore().deserialize_cdr(raw, T.COMPRESSED_IMAGE)
                msg.data = np.frombuffer(b'not a png', np.uint8)  # one broken frame
                raw = typestore().serialize_cdr(msg, T.COMPRESSED_IMAGE)
            target.write_raw(topic, time, raw)
    out = work / 'png_junk_out'
    assert cli.main(['replay', str(bag), '--out', str(out), '--model', str(toy_model),
                     '--quiet', *COMPRESSED_TOPICS]) == 0
    pairs = json.loads((out / 'report.json').read_text())['pairs']
    assert (pairs['processed'], pairs['bad_inputs']) == (PAIRS - 1, 1)
    assert 'does not decode' in pairs['first_bad_input']


def test_bag_without_thermal_topic_lists_its_topics(msrs_bag, work, toy_model, capsys):
    bag = work / 'rgb_only'
    with BagInput(msrs_bag) as source, BagOutput(bag) as target:
        for topic in (T.RGB_IMAGE, T.RGB_INFO):
            target.add_topic(topic, source.topics[topic].msgtype)
        for topic, time, raw in source.messages([T.RGB_IMAGE, T.RGB_INFO]):
            target.write_raw(topic, time, raw)
    out = work / 'rgb_only_out'
    assert cli.main(['replay', str(bag), '--out', str(out), '--model', str(toy_model),
                     '--quiet']) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'Traceback' not in err
    assert f'has no topic {T.THERMAL_IMAGE}' in err
    assert f'{T.RGB_IMAGE} (sensor_msgs/msg/Image, {PAIRS})' in err and T.RGB_INFO in err
    assert not out.exists()


@pytest.mark.ros
def test_online_replay_answers_every_pair_as_offline(msrs_bag, config_file, offline_out, work):
    out = work / 'online'  # rate 0.2: the node has time for every pair, none is replaced
    assert cli.main(['replay', str(msrs_bag), '--out', str(out), '--rate', '0.2', '--config',
                     str(config_file), '--quiet', '--node-timeout', '120']) == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['kind'] == 'online' and report['answer_wait']['timed_out'] is False
    pairs = report['pairs']
    assert (pairs['synchronised'], pairs['processed'], pairs['dropped']) == (PAIRS, PAIRS, 0)
    assert set(pairs['dropped_by_reason'].values()) == {0}
    assert report['latency_ms']['count'] == PAIRS
    assert 0 < report['latency_ms']['p50'] <= report['latency_ms']['max'] < 10_000
    assert 0 < report['node_latency_ms'] < 10_000  # receive -> publish, not bag stamp vs clock
    offline = {stamp_ns(m.header): m for _, m in read_bag(offline_out / 'bag')[T.DETECTIONS]}
    online = read_bag(out / 'bag')[T.DETECTIONS]
    assert len(online) == PAIRS and {stamp_ns(m.header) for _, m in online} == set(offline)
    for _, msg in online:
        boxes, names, scores = boxes_from_msg(msg)
        ref_boxes, ref_names, ref_scores = boxes_from_msg(offline[stamp_ns(msg.header)])
        assert names == ref_names
        np.testing.assert_allclose(boxes, ref_boxes, atol=1e-3)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


@pytest.mark.ros
def test_online_replay_of_a_compressed_bag_subscribes_the_node_to_compressed(png_bag,
                                                                           config_file,
                                                                           offline_out, work):
    out = work / 'png_online'
    assert cli.main(['replay', str(png_bag), '--out', str(out), '--rate', '0.2', '--config',
                     str(config_file), '--quiet', '--node-timeout', '120',
                     *COMPRESSED_TOPICS]) == 0
    pairs = json.loads((out / 'report.json').read_text())['pairs']
    assert (pairs['synchronised'], pairs['processed'], pairs['bad_inputs']) == (PAIRS, PAIRS, 0)
    offline = {stamp_ns(m.header): m for _, m in read_bag(offline_out / 'bag')[T.DETECTIONS]}
    for _, msg in read_bag(out / 'bag')[T.DETECTIONS]:  # the raw bag's boxes, decoded by the node
        boxes, _, scores = boxes_from_msg(msg)
        ref_boxes, _, ref_scores = boxes_from_msg(offline[stamp_ns(msg.header)])
        np.testing.assert_allclose(boxes, ref_boxes, atol=1e-3)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_online_replay_refuses_a_compressed_topic_the_node_cannot_subscribe_to(png_bag, work,
                                                                              toy_model,
                                                                              capsys):
    bag = work / 'png_renamed'
    with BagInput(png_bag) as source, BagOutput(bag) as target:
        for topic in (f'{T.RGB_IMAGE}/compressed', f'{T.THERMAL_IMAGE}/compressed'):
            target.add_topic(topic.replace('/compressed', '/jpeg'), T.COMPRESSED_IMAGE)
            for _, time, raw in source.messages([topic]):
                target.write_raw(topic.replace('/compressed', '/jpeg'), time, raw)
    out = work / 'png_renamed_out'
    assert cli.main(['replay', str(bag), '--rate', '1', '--out', str(out), '--model',
                     str(toy_model), '--quiet', '--rgb-topic', f'{T.RGB_IMAGE}/jpeg',
                     '--thermal-topic', f'{T.THERMAL_IMAGE}/jpeg']) == 1
    err = capsys.readouterr().err
    assert 'does not end in /compressed' in err and 'Traceback' not in err
    assert not out.exists()


@pytest.mark.ros
def test_online_replay_of_msrs_mini_at_rate_1_accounts_for_every_pair(data_dir, config_file,
                                                                     work):
    source = open_samples(data_dir / 'msrs_mini', 'msrs', 'train')
    write_bag(source, work / 'msrs_full', BagConfig(), progress=False)
    out = work / 'online_full'
    assert cli.main(['replay', str(work / 'msrs_full'), '--out', str(out), '--rate', '1',
                     '--config', str(config_file), '--quiet', '--node-timeout', '120']) == 0
    report = json.loads((out / 'report.json').read_text())
    pairs, total = report['pairs'], len(source)
    print(f"msrs_mini at rate 1: {pairs}; latency {report['latency_ms']}; node latency "
          f"{report['node_latency_ms']} ms")
    assert total == 34 and pairs['synchronised'] == total
    assert pairs['processed'] + sum(pairs['dropped_by_reason'].values()) == total
    assert pairs['dropped'] == total - pairs['processed'] and pairs['processed'] >= 1
    assert pairs['dropped_by_reason']['no_answer'] == 0 and not report['warnings']
    assert report['ground_truth'] == {T.GT_RGB_DETECTIONS: total, T.GT_THERMAL_DETECTIONS: total}
    assert report['scores']['pairs_scored'] == pairs['processed']  # every output has truth
    assert report['scores']['detection']['fused']['images'] == pairs['processed']
    assert report['latency_ms']['count'] == pairs['processed']
    assert 0 < report['latency_ms']['p50'] <= report['latency_ms']['max'] < 10_000
    assert 0 < report['node_latency_ms'] < 10_000
    text = (out / 'report.md').read_text()
    assert 'No ground truth' not in text and '| fused |' in text


@pytest.mark.parametrize('flags, message', [
    (['--node', 'running'], '--node: online replay only (give --rate)'),
    (['--qos', 'best_effort', '--node-timeout', '5'], '--qos, --node-timeout: online replay only'),
    (['--node-timeout', '0'], '--node-timeout: online replay only'),  # 0 is given, not unset
    (['--rate', '1', '--output-mode-only'], '--output-mode-only: offline replay only'),
    (['--rate', '1', '--node', 'running', '--device', 'cuda', '--qos', 'reliable'],
     "--device, --qos: --node running uses the running node's own"),
])
def test_flags_the_chosen_replay_would_ignore_are_refused(flags, message, tmp_path, capsys):
    assert cli.main(['replay', str(tmp_path / 'any.mcap'), '--out', str(tmp_path / 'out'),
                     *flags]) == 1
    assert message in capsys.readouterr().err and not (tmp_path / 'out').exists()


def test_offline_replay_applies_the_configs_class_names_as_the_node(msrs_bag, toy_model, work,
                                                                     capsys):
    params = work / 'renamed.yaml'
    for names, code in ((['pedestrian', 'cycle', 'vehicle'], 0), (['pedestrian'], 1)):
        params.write_text(f'/**:\n  ros__parameters:\n    model: {toy_model}\n    device: cpu\n'
                          f'    precision: fp32\n    score_threshold: {SCORE_THRESHOLD}\n'
                          f'    detection_class_names: {names}\n')
        out = work / f'renamed_{len(names)}'
        assert cli.main(['replay', str(msrs_bag), '--out', str(out), '--config', str(params),
                         '--quiet']) == code
    assert 'parameter detection_class_names: the model has 3 classes, got 1' in \
        capsys.readouterr().err
    detections = read_bag(work / 'renamed_3' / 'bag')[T.DETECTIONS]
    names = {n for _, msg in detections for n in boxes_from_msg(msg)[1]}
    assert names and names <= {'pedestrian', 'cycle', 'vehicle'}
