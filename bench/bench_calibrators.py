"""Fitting post-hoc calibrators over a PASCAL-VOC-sized validation stream: time and peak memory.

Synthetic stand-in for VOC val (default 1,449 images of 500x375, 21 classes): per image, smooth logit maps
(low-resolution Gaussian noise upsampled, plus pixel noise), labels drawn from the calibrated model
``softmax(z_true)`` by the Gumbel-max trick, 5% of the pixels set to ignore (255), and reported logits
``z_true * 1.8`` (over-confident: the fitted temperature should be about 1.8). Every image is generated from its
own seed, so each pass re-creates the same stream (as re-reading stored logits would).

Each method runs in its own child process; peak memory is that process's ``ru_maxrss`` (resource.getrusage), and
"delta" subtracts a baseline child that imports the same modules and generates one minibatch. Methods:

* ``ts_stream``     TemperatureScaling (Newton on 1/T), streamed minibatches: O(batch) memory, one pass per step.
* ``ts_naive``      the common recipe (Guo et al.'s reference code, torch-uncertainty): concatenate every labelled
                    pixel's logits, then L-BFGS on T over the whole tensor (here with a strong-Wolfe line search so
                    that it converges like the others; "passes" counts its full-data loss evaluations). Above
                    ``--naive-max-images`` it runs on that many images and time/memory are extrapolated linearly
                    (full VOC: 1449 x 500 x 375 x 21 x 4 bytes = 22.8 GB of logits).
* ``ts_sub_cache``  TemperatureScaling (Newton) on ``--max-pixels`` pixels per image, cached after one pass.
* ``ts_grid_sub``   the benchmark grid T in {0.1, ..., 10} selecting ECE-15, one pass, ``--max-pixels`` per image.
* ``lts_stream``    LocalTemperatureScaling, ``--lts-epochs`` epochs of Adam over streamed minibatches.
* ``lts_naive``     the same after concatenating every logit map in memory (extrapolated like ``ts_naive``).

Run: ``.venv/bin/python bench/bench_calibrators.py --images 40`` (the default size takes hours on 2 CPU cores).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

T_TRUE = 1.8
VOC_IMAGES = 1449
METHODS = ('ts_stream', 'ts_naive', 'ts_sub_cache', 'ts_grid_sub', 'lts_stream', 'lts_naive')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=VOC_IMAGES, help='validation images (VOC val: 1449)')
    parser.add_argument('--height', type=int, default=375)
    parser.add_argument('--width', type=int, default=500)
    parser.add_argument('--classes', type=int, default=21)
    parser.add_argument('--batch', type=int, default=2, help='images per streamed minibatch')
    parser.add_argument('--max-pixels', type=int, default=10000, help='pixels per image for the subsampled fits')
    parser.add_argument('--naive-max-images', type=int, default=40,
                        help='largest image count the naive methods really hold in memory (else extrapolated)')
    parser.add_argument('--lts-epochs', type=int, default=1)
    parser.add_argument('--threads', type=int, default=1, help='torch threads per child (shared machines: 1)')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- child process
def make_source(args, images):
    import torch
    import torch.nn.functional as F

    k, h, w = args.classes, args.height, args.width

    def image(index):
        g = torch.Generator().manual_seed(1000 + index)
        coarse = torch.randn(1, k, h // 25 + 1, w // 25 + 1, generator=g) * 3.0
        z_true = F.interpolate(coarse, size=(h, w), mode='bilinear', align_corners=False)[0]
        z_true += torch.randn(k, h, w, generator=g)
        gumbel = -torch.log(-torch.log(torch.rand(k, h, w, generator=g).clamp_(1e-20, 1.0)))
        labels = (z_true + gumbel).argmax(dim=0)
        labels[torch.rand(h, w, generator=g) < 0.05] = 255
        return z_true * T_TRUE, labels

    def batches():
        for start in range(0, images, args.batch):
            pairs = [image(i) for i in range(start, min(start + args.batch, images))]
            yield torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    return batches


def run_child(args):
    import torch

    torch.set_num_threads(args.threads)
    from calibseg.calibrators import LocalTemperatureScaling, TemperatureScaling

    name = args.child
    naive = name.endswith('_naive')
    images = min(args.images, args.naive_max_images) if naive else args.images
    source = make_source(args, images)
    out = {'method': name, 'images': images, 'extrapolated_from': None}
    start = time.perf_counter()
    if name == 'baseline':
        sum(1 for _ in zip(range(1), source()))
        start = time.perf_counter()
        pixels = sum(int((y != 255).sum()) for _, y in source())  # one pass over the source: generation cost
        out.update(pixels=pixels, result='one pass over the source')
    elif name == 'ts_stream':
        ts = TemperatureScaling(num_classes=args.classes).fit(source)
        out.update(pixels=ts.fit_info['num_pixels'], result=f'T={ts.temperature.item():.4f}',
                   passes=ts.fit_info['passes'])
    elif name == 'ts_sub_cache':
        ts = TemperatureScaling(num_classes=args.classes).fit(
            source, max_pixels_per_image=args.max_pixels, cache=True, generator=torch.Generator().manual_seed(0))
        out.update(pixels=ts.fit_info['num_pixels'], result=f'T={ts.temperature.item():.4f}',
                   passes=ts.fit_info['passes'])
    elif name == 'ts_grid_sub':
        ts = TemperatureScaling(num_classes=args.classes, method='grid').fit(
            source, max_pixels_per_image=args.max_pixels, generator=torch.Generator().manual_seed(0))
        out.update(pixels=ts.fit_info['num_pixels'], result=f'T={ts.temperature.item():.4f}', passes=1)
    elif name == 'ts_naive':
        rows, labels = [], []
        for z, y in source():
            keep = y != 255
            rows.append(z.movedim(1, -1)[keep])
            labels.append(y[keep])
        logits, target = torch.cat(rows), torch.cat(labels)
        del rows, labels
        temperature = torch.nn.Parameter(torch.ones(()))
        optimizer = torch.optim.LBFGS([temperature], lr=1.0, max_iter=100, line_search_fn='strong_wolfe')
        evaluations = []

        def closure():
            evaluations.append(1)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(logits / temperature, target)
            loss.backward()
            return loss

        optimizer.step(closure)
        out.update(pixels=int(target.numel()), result=f'T={temperature.item():.4f}', passes=len(evaluations))
    elif name in ('lts_stream', 'lts_naive'):
        lts = LocalTemperatureScaling(num_classes=args.classes)
        data = source
        if naive:
            pairs = list(source())
            logits, target = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
            del pairs

            def data():
                for i in range(0, logits.shape[0], args.batch):
                    yield logits[i:i + args.batch], target[i:i + args.batch]

        lts.fit(data, epochs=args.lts_epochs, lr=1e-2)
        out.update(pixels=lts.fit_info['num_pixels'], passes=args.lts_epochs,
                   result=f"mean T(x)={lts.fit_info['temperature_mean']:.3f}")
    else:
        raise ValueError(f'unknown method {name!r}')
    out['seconds'] = time.perf_counter() - start
    out['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print(json.dumps(out))


# --------------------------------------------------------------------------------------------- parent process
def spawn(args, name):
    argv = [sys.executable, os.path.abspath(__file__), '--child', name, '--images', str(args.images),
            '--height', str(args.height), '--width', str(args.width), '--classes', str(args.classes),
            '--batch', str(args.batch), '--max-pixels', str(args.max_pixels),
            '--naive-max-images', str(args.naive_max_images), '--lts-epochs', str(args.lts_epochs),
            '--threads', str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f'{name} failed:\n{done.stderr[-3000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return
    full_bytes = args.images * args.height * args.width * args.classes * 4
    print(f'{args.images} synthetic images of {args.width}x{args.height}, {args.classes} classes, batches of '
          f'{args.batch}, {args.threads} torch thread(s); all logits in float32 = {full_bytes / 1e9:.2f} GB')
    base = spawn(args, 'baseline')
    print(f"baseline child (imports + one minibatch): peak RSS {base['peak_rss_mb']:.0f} MB; one pass over the "
          f"source (generating {base['pixels']:,} labelled pixels) takes {base['seconds']:.1f} s")
    rows = []
    for name in args.methods:
        r = spawn(args, name)
        r['delta_mb'] = max(r['peak_rss_mb'] - base['peak_rss_mb'], 0.0)
        if r['images'] < args.images:  # naive on a subset: scale time and extra memory with the pixel count
            factor = args.images / r['images']
            r['extrapolated_from'] = r['images']
            r['seconds'] *= factor
            r['pixels'] = int(r['pixels'] * factor)
            r['delta_mb'] *= factor
            r['peak_rss_mb'] = base['peak_rss_mb'] + r['delta_mb']
            r['images'] = args.images
        rows.append(r)
        print(f"  done {name}: {r['seconds']:.1f} s", flush=True)
    ref = {'ts': next((r for r in rows if r['method'] == 'ts_naive'), None),
           'lts': next((r for r in rows if r['method'] == 'lts_naive'), None)}
    header = (f"{'method':<14}{'pixels':>13}{'passes':>8}{'time s':>10}{'peak RSS MB':>13}{'delta MB':>10}"
              f"{'time/naive':>12}{'naive peak/this':>17}  result")
    print()
    print(header)
    print('-' * len(header))
    for r in rows:
        naive = ref[r['method'].split('_')[0]]
        t_ratio = f"{r['seconds'] / naive['seconds']:.2f}" if naive else '-'
        m_ratio = f"{naive['peak_rss_mb'] / r['peak_rss_mb']:.1f}x" if naive else '-'
        note = f" (extrapolated from {r['extrapolated_from']} images)" if r['extrapolated_from'] else ''
        print(f"{r['method']:<14}{r['pixels']:>13,}{r.get('passes', 1):>8}{r['seconds']:>10.1f}"
              f"{r['peak_rss_mb']:>13.0f}{r['delta_mb']:>10.0f}{t_ratio:>12}{m_ratio:>17}  {r['result']}{note}")
    print(f'\nFitted temperatures should be near {T_TRUE} (labels drawn from softmax(z_true)). "delta" is the peak '
          'RSS above the baseline child; ratios compare with the naive method of the same calibrator.')
    if args.images != VOC_IMAGES:
        factor = VOC_IMAGES / args.images
        print(f'\nProjected to {VOC_IMAGES} images (time x{factor:.1f}; extra memory x{factor:.1f} for the naive '
              'methods, the cache growing with the images for ts_sub_cache, constant for the streaming ones):')
        for r in rows:
            delta = r['delta_mb']
            if r['method'].endswith('_naive'):
                delta *= factor
            elif r['method'] == 'ts_sub_cache':  # float32 logits + int64 label per cached pixel
                delta += r['pixels'] * (4 * args.classes + 8) / 2 ** 20 * (factor - 1)
            print(f"  {r['method']:<14}{r['seconds'] * factor / 60:>8.1f} min   peak RSS ~"
                  f"{(base['peak_rss_mb'] + delta) / 1024:>6.1f} GB")

if __name__ == '__main__':
    main()
