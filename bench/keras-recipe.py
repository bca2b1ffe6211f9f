#!/usr/bin/env python3
"""The Keras guide's transfer-learning recipe, for a side-by-side with finetune (`npm run bench -- --only keras`).

Follows tensorflow.org's "Transfer learning and fine-tuning" (MobileNetV2) with these choices, stated so the
comparison can be checked:
- data: image_dataset_from_directory(<data>/train) and (<data>/val) at 224 px (the guide uses 160; finetune's
  default is 224), batch 32, shuffle on; both `.cache().prefetch(AUTOTUNE)`; val/ is the validation set (no test split);
- augmentation RandomFlip('horizontal') + RandomRotation(0.2); mobilenet_v2.preprocess_input ([-1, 1]);
- base MobileNetV2(include_top=False, alpha) frozen and called with training=False (BatchNorm stays in inference
  mode in both stages, as the guide says); GlobalAveragePooling2D, Dropout(0.2), Dense(1) with
  BinaryCrossentropy(from_logits=True) for 2 classes (the guide's head), Dense(n) with sparse softmax otherwise;
- stage 1: Adam(1e-4; --lr) for --head-epochs (10); stage 2: layers from index 100 of the base unfrozen,
  RMSprop(1e-5) (the tensorflow.org guide; keras.io uses Adam(1e-5)) for --fine-tune-epochs (5; the guide uses 10);
- reported accuracy/loss: model.evaluate on val/ after the last epoch (the guide keeps the last epoch).
Weights: a classic Keras HDF5 file (layer_names / weight_names, e.g. ../shared's from-int8 α=1.0 no_top file) or a
tfjs layers model.json (the Teachable Machine α=0.35 model finetune uses), both loaded by layer name with every
backbone weight required, so no Keras download is needed.

Prints one JSON line: val accuracy, val loss, wall seconds, CPU seconds (os.times: this process, every thread).
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('data', help='folder with train/ and val/ class subfolders')
    p.add_argument('--alpha', type=float, default=1.0)
    p.add_argument('--weights', required=True, help='Keras .h5 (by layer name) or tfjs model.json')
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--head-epochs', type=int, default=10)
    p.add_argument('--fine-tune-epochs', type=int, default=5)
    p.add_argument('--fine-tune-at', type=int, default=100)
    p.add_argument('--freeze-bn', action='store_true', help="stage 2: keep BatchNormalization layers' gamma/beta frozen too (not the guide's; a diagnosis)")
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--lr', type=float, default=1e-4, help="stage 1 Adam rate (default 1e-4, the guide's); stage 2 uses lr / 10")
    p.add_argument('--features-of', help='instead of training: print the pooled backbone features of this .npy input batch (NHWC, [-1, 1]) as JSON')
    return p.parse_args()


def backbone_weights(path):
    """{layer name: {variable name: array}} from a classic Keras HDF5 or a tfjs layers model."""
    import numpy as np
    found = {}
    if os.path.isdir(path):
        path = os.path.join(path, 'model.json')
    if path.endswith('.json'):
        model = json.load(open(path))
        offset = 0
        folder = os.path.dirname(path)
        for group in model['weightsManifest']:
            blob = b''.join(open(os.path.join(folder, p), 'rb').read() for p in group['paths'])
            offset = 0
            for w in group['weights']:
                if w['dtype'] != 'float32':
                    sys.exit(f"{path}: weight {w['name']} is {w['dtype']}; only float32 tfjs weights are read")
                n = int(np.prod(w['shape'])) if w['shape'] else 1
                arr = np.frombuffer(blob, dtype='<f4', count=n, offset=offset).reshape(w['shape'])
                offset += 4 * n
                layer, var = w['name'].rsplit('/', 1)
                found.setdefault(layer.split('/')[-1], {})[var] = arr
        return found
    import h5py
    with h5py.File(path, 'r') as f:
        g = f['model_weights'] if 'model_weights' in f else f
        for layer in g.attrs['layer_names']:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            for wn in g[layer].attrs['weight_names']:
                wn = wn.decode() if isinstance(wn, bytes) else wn
                found.setdefault(layer, {})[wn.split('/')[-1].split(':')[0]] = g[layer][wn][()]
    return found


def load_by_name(base, path):
    weights = backbone_weights(path)
    loaded = 0
    for layer in base.layers:
        if not layer.weights:
            continue
        have = weights.get(layer.name)
        if have is None:
            sys.exit(f'{path} has no weights for layer {layer.name}: pass weights of MobileNetV2 at this alpha')
        values = []
        for v in layer.weights:
            name = v.name.split('/')[-1].split(':')[0]
            if name not in have and name == 'kernel' and 'depthwise_kernel' in have:
                name = 'depthwise_kernel'  # Keras 3's DepthwiseConv2D calls it kernel; Keras 2 and tfjs depthwise_kernel
            if name not in have or tuple(have[name].shape) != tuple(v.shape):
                sys.exit(f'{path}: {layer.name}/{name} missing or shaped {getattr(have.get(name), "shape", None)}, model wants {tuple(v.shape)}')
            values.append(have[name])
        layer.set_weights(values)
        loaded += len(values)
    return loaded


def main():
    args = parse_args()
    wall0 = time.perf_counter()
    t0 = os.times()
    import numpy as np
    import tensorflow as tf
    import keras
    keras.utils.set_random_seed(args.seed)

    shape = (args.size, args.size, 3)
    base = keras.applications.MobileNetV2(input_shape=shape, include_top=False, alpha=args.alpha, weights=None)
    loaded = load_by_name(base, args.weights)

    if args.features_of:
        x = np.load(args.features_of).astype('float32')
        feats = keras.layers.GlobalAveragePooling2D()(base(x, training=False)).numpy()
        print(json.dumps({'features': feats.tolist(), 'weightsLoaded': loaded}))
        return

    def dataset(sub, shuffle):
        return keras.utils.image_dataset_from_directory(
            os.path.join(args.data, sub), shuffle=shuffle, seed=args.seed, batch_size=args.batch, image_size=shape[:2])

    train = dataset('train', True)
    val = dataset('val', False)
    classes = train.class_names
    train = train.cache().prefetch(tf.data.AUTOTUNE)
    val = val.cache().prefetch(tf.data.AUTOTUNE)

    augment = keras.Sequential([keras.layers.RandomFlip('horizontal'), keras.layers.RandomRotation(0.2)])
    base.trainable = False
    inputs = keras.Input(shape=shape)
    x = augment(inputs)
    x = keras.applications.mobilenet_v2.preprocess_input(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    binary = len(classes) == 2
    outputs = keras.layers.Dense(1 if binary else len(classes))(x)
    model = keras.Model(inputs, outputs)
    if binary:
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        metrics = [keras.metrics.BinaryAccuracy(threshold=0, name='accuracy')]  # on logits, as the guide
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = ['accuracy']

    lr = args.lr
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss, metrics=metrics)
    s1 = time.perf_counter()
    h1 = model.fit(train, epochs=args.head_epochs, validation_data=val, verbose=2)
    s2 = time.perf_counter()
    base.trainable = True
    for layer in base.layers[:args.fine_tune_at]:
        layer.trainable = False
    if args.freeze_bn:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=lr / 10), loss=loss, metrics=metrics)
    h2 = model.fit(train, epochs=args.head_epochs + args.fine_tune_epochs, initial_epoch=len(h1.epoch),
                   validation_data=val, verbose=2)
    s3 = time.perf_counter()
    val_loss, val_acc = model.evaluate(val, verbose=0)
    t1 = os.times()
    history = [round(float(a), 4) for a in h1.history['val_accuracy'] + h2.history.get('val_accuracy', [])]
    print(json.dumps({
        'recipe': 'keras-guide', 'lr': lr, 'fineTuneAt': args.fine_tune_at, 'freezeBn': args.freeze_bn, 'alpha': args.alpha, 'size': args.size, 'classes': classes,
        'valAccuracy': round(float(val_acc), 4), 'valLoss': round(float(val_loss), 4),
        'valAccuracyPerEpoch': history,
        'seconds': round(time.perf_counter() - wall0, 2),
        'stageSeconds': [round(s2 - s1, 2), round(s3 - s2, 2)],
        'cpuSeconds': round((t1.user - t0.user) + (t1.system - t0.system), 2),
        'weightsLoaded': loaded, 'tensorflow': tf.__version__, 'keras': keras.__version__,
        'threads': [tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads()],
    }))


if __name__ == '__main__':
    main()
