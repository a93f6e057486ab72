"""`python -m data.evaluate_text_filter`: the long-form text filter's 5-fold cross-validated accuracy,
precision and recall on its labelled sentences (`data.text_filter.cross_validate`), beside the
majority-class baseline.  The last stdout line is JSON.
"""
from __future__ import annotations

from common import cli


def main(argv=None) -> dict:
    from data.text_filter import cross_validate

    del argv
    r = cross_validate()
    print(f"long-form text filter, {r['folds']}-fold cross-validation on {r['examples']} labelled sentences "
          f"({r['positives']} about the music):")
    print(f"  accuracy {r['accuracy']:.3f} (majority class {r['majority_baseline']:.3f}), "
          f"precision {r['precision']:.3f}, recall {r['recall']:.3f}")
    return cli.print_json(r)


if __name__ == "__main__":
    main()
