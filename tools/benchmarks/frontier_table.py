"""One table of every method's training cost from benchmark runs.

Reads the JSON files that ``tools/benchmark.py`` writes (one per backbone
family, e.g. Swin-T and ViT-S with ``--variants all-train``) and prints one
markdown table: per run, each method's trainable backbone parameters, step
time and peak memory with ratios to full fine-tuning (with the same
attention kernel). The table of docs/benchmarks.md comes from

    python tools/benchmark.py --preset swin-t --threads 1 --timer cpu \\
        --repeats 3 --warmup 1 --measure train --variants all-train \\
        --out work_dirs/benchmark/frontier-swin-t
    python tools/benchmark.py --preset vit-s  (the same options) \\
        --out work_dirs/benchmark/frontier-vit-s
    python tools/benchmarks/frontier_table.py \\
        work_dirs/benchmark/frontier-swin-t.json \\
        work_dirs/benchmark/frontier-vit-s.json
"""
import argparse
import json

from mmpeft.benchmark import frontier_markdown


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+',
                        help='JSON files written by tools/benchmark.py')
    args = parser.parse_args(argv)
    docs = []
    for path in args.runs:
        with open(path) as f:
            docs.append(json.load(f))
    table = frontier_markdown(docs)
    print(table)
    return table


if __name__ == '__main__':
    main()
