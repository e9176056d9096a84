"""``robustscale export``: a run as a timm-layout folder (weights, config.json, model card with its compute bill)."""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from ..errors import UserError
from ..hub import export_run


def run(args: argparse.Namespace) -> int:
    if not str(args.to).strip():
        raise UserError("--to is empty; give the folder to write (it must be absent or empty)")
    if args.private and not args.push_to_hub:
        raise UserError("--private applies to the Hub repo that --push-to-hub creates; add --push-to-hub REPO "
                        "or leave --private out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = export_run(args.run_dir, args.to, args.weights, force=args.force, push_to_hub=args.push_to_hub,
                            private=args.private, license=args.license)
    for w in caught:
        print(f"warning: {str(w.message).splitlines()[0] if str(w.message) else w.category.__name__}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"exported the {result['weights']} weights (epoch {result['epoch']}) of {args.run_dir} to {result['path']}"
          f" ({result['claims']} evaluation claim(s) in the model card)")
    if result["pushed"]:
        print(f"pushed: {result['pushed']}")
    return 0
