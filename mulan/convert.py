"""`python -m mulan.convert bert|ast|resnet --src=CHECKPOINT --out=FILE.safetensors`.

    python -m mulan.convert bert   --src HF_BERT_DIR_OR_SAFETENSORS  --out text.safetensors
    python -m mulan.convert ast    --src HF_AST.safetensors --grid 99,12 --out audio.safetensors
    python -m mulan.convert resnet --src torchvision_resnet50.safetensors --out audio.safetensors

Converts an externally pretrained checkpoint to MuLan tower parameters (`mulan.pretrained`: the
name tables, the AST positional-embedding resize, BatchNorm folding).  Audio checkpoints are then
named by `MulanModel.audio_checkpoint`; BERT folders load directly (`MulanModel.text_checkpoint`),
so the `bert` subcommand is for inspecting or pre-converting.  Every mismatch names the parameter.
The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import sys

from common import cli
from mulan import pretrained


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["bert", "ast", "resnet"])
    ap.add_argument("--src", required=True, help="checkpoint file or HF folder")
    ap.add_argument("--out", required=True, help="output .safetensors")
    ap.add_argument("--num_heads", type=int, default=None, help="attention heads (BERT: from config.json)")
    ap.add_argument("--src_grid", default="101,12", help="AST: the checkpoint's time,mel patch grid")
    ap.add_argument("--grid", default=None, help="AST: the target time,mel patch grid (resized if different)")
    args = ap.parse_args(argv)
    with cli.exit_on(pretrained.CheckpointMismatchError, FileNotFoundError):
        if args.kind == "bert":
            tree = pretrained.bert_params_from_hf(args.src, args.num_heads)
        elif args.kind == "ast":
            grid = lambda s: tuple(int(x) for x in s.split(","))
            tree = pretrained.ast_params_from_hf(args.src, args.num_heads or 12, grid(args.src_grid),
                                      grid(args.grid) if args.grid else None)
        else:
            tree = pretrained.resnet_params_from_torch(args.src)
    pretrained.save_tree(tree, args.out)
    n = int(sum(v.size for v in pretrained.flatten(tree).values()))
    print(f"wrote {n:,} parameters to {args.out}", file=sys.stderr)
    return cli.print_json({"kind": args.kind, "out": args.out, "num_params": n})


if __name__ == "__main__":
    main()
