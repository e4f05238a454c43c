"""The speed peer: musicnn 0.1.0 MTT_vgg in ONE persistent TF session, all of a file's patches at once.

Runs inside the peer's own virtual environment (benchmarks/setup_peer.sh), never the
project's, as a subprocess of benchmarks/inference_bench.py:

    benchmarks/.peer-venv/bin/python benchmarks/peer_musicnn.py FILE...

It builds the graph once, restores the shipped weights and checks that the restore
really happened (musicnn's own ``extractor()`` hides a failed restore behind a bare
``except:`` and then runs an untrained model), prints one JSON line ``{"ready": ...}``,
then answers each ``pass`` line on stdin with one JSON line: the timed pass over every
file (load -> log-mel -> patches -> forward), split into stages. ``quit`` or EOF ends
it. Timing happens here, so process start-up and TF import are not counted; the
caller interleaves these passes with its own, so both see the same machine load.

What a pass does per file is musicnn's ``extractor()`` without the per-call graph
rebuild: ``librosa.load(sr=16000, duration=29)``, the mel spectrogram, musicnn's
float16 cast and log10(1 + 10000 x), non-overlapping 187-frame patches, one
``sess.run`` over all the patches, the mean taggram as the song's tags. Files
shorter than one patch (3 s) are skipped (musicnn crashes on them), and reported.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main(paths: list[str]) -> int:
    import librosa
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    import musicnn
    from musicnn import configuration as config
    from musicnn import models

    model = "MTT_vgg"
    n_frames = 187  # librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1, as extractor()
    labels = config.MTT_LABELS
    t_build = time.perf_counter()
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, config.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        y = models.define_model(x, is_training, model, len(labels))[0]
        probs = tf.nn.sigmoid(y)
    sess = tf.compat.v1.Session()
    sess.run(tf.compat.v1.global_variables_initializer())
    ckpt_dir = os.path.join(os.path.dirname(musicnn.__file__), model)
    variables = tf.compat.v1.global_variables()
    before = {v.name: sess.run(v) for v in variables}
    tf.compat.v1.train.Saver().restore(sess, ckpt_dir + "/")  # raises if it fails: no bare except here
    # Proof that the weights are the trained ones: every variable equals the checkpoint's
    # tensor and differs from its random initialisation (moving statistics may start at 0/1).
    # Read the prefix itself: the shipped "checkpoint" index file points to the author's disk.
    reader = tf.compat.v1.train.NewCheckpointReader(ckpt_dir + "/")
    stored = reader.get_variable_to_shape_map()
    matched = changed = 0
    for v in variables:
        name = v.name.split(":")[0]
        if name in stored:
            value = sess.run(v)
            matched += int(np.array_equal(value, reader.get_tensor(name)))
            changed += int(not np.array_equal(value, before[v.name]))
    restore = {
        "variables": len(variables),
        "equal_to_checkpoint": matched,
        "changed_by_restore": changed,
        "ok": matched == len(variables) and changed >= len(variables) // 2,
    }
    build_s = time.perf_counter() - t_build
    print(
        json.dumps(
            {
                "ready": True,
                "model": model,
                "tf": tf.__version__,
                "numpy": np.__version__,
                "librosa": librosa.__version__,
                "restore": restore,
                "build_s": build_s,
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            }
        ),
        flush=True,
    )
    if not restore["ok"]:
        return 1

    def one_pass() -> dict:
        stages = {"load": 0.0, "features": 0.0, "forward": 0.0}
        segments, skipped, tags = [], [], {}
        started = time.perf_counter()
        for path in paths:
            t0 = time.perf_counter()
            audio, sr = librosa.load(path, sr=config.SR, duration=29.0)
            t1 = time.perf_counter()
            rep = librosa.feature.melspectrogram(
                y=audio, sr=sr, hop_length=config.FFT_HOP, n_fft=config.FFT_SIZE, n_mels=config.N_MELS
            ).T
            rep = np.log10(10000 * rep.astype(np.float16) + 1)
            n = rep.shape[0] // n_frames
            t2 = time.perf_counter()
            stages["load"] += t1 - t0
            stages["features"] += t2 - t1
            if n == 0:
                skipped.append(os.path.basename(path))
                continue
            batch = rep[: n * n_frames].reshape(n, n_frames, config.N_MELS)
            out = sess.run(probs, feed_dict={x: batch, is_training: False})
            stages["forward"] += time.perf_counter() - t2
            segments.append(int(n))
            song = out.mean(axis=0)
            tags[os.path.basename(path)] = [labels[i] for i in np.argsort(-song)[:3]]
        return {
            "seconds": time.perf_counter() - started,
            "files": len(segments),
            "segments": segments,
            "skipped": skipped,
            "stages": stages,
            "top_tags": tags,
        }

    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command == "pass":
            print(json.dumps(one_pass()), flush=True)
    sess.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
