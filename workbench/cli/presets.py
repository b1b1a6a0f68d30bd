"""`lora-workbench presets list|show|check`."""

from __future__ import annotations

import argparse

import yaml

from workbench.cli.output import print_json, print_table
from workbench.core.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser("presets", help="list, show and check LoRA/QLoRA presets")
    actions = parser.add_subparsers(dest="presets_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="presets by family (built-in and the workspace's own)")
    listing.add_argument("--model", help="put the presets of this model's family first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="one preset: its fields, what differs from the family default, "
                                           "and a GPU memory estimate")
    show.add_argument("name", help="preset name or a preset .yaml file")
    show.add_argument("--model", help="estimate memory for this model instead of the preset's own")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    check = actions.add_parser(
        "check", help="apply each preset's LoRA to tiny models of its family and verify the wrapped modules",
        description="Builds tiny random models of every architecture in the preset's family, applies the "
                    "preset's LoRA with PEFT and verifies that every target module matches, that LoRA wraps "
                    "attention/MLP layers (not only lm_head), and that gradients reach the adapters.")
    check.add_argument("names", nargs="*", metavar="NAME", help="presets to check (default: all)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_check)


def _workspace(args: argparse.Namespace):
    from workbench.cli import workspace_of

    return workspace_of(args)


def cmd_list(args: argparse.Namespace) -> int:
    from workbench.core.family import detect_family
    from workbench.core.presets import list_presets

    workspace = _workspace(args)
    family = detect_family(args.model, workspace) if args.model else None
    presets = list_presets(workspace, family)
    if args.json:
        print_json([
            {"name": p.name, "family": p.family, "method": p.method, "builtin": p.builtin, "path": str(p.path),
             "description": p.description, "matches_model": family is not None and p.family == family.name}
            for p in presets
        ])
        return 0
    if args.model:
        print(f"model {args.model}: " + (f"family {family.name} ({family.title})" if family
                                          else "family not recognised; all presets listed"))
    print_table(["NAME", "FAMILY", "METHOD", "SOURCE", "DESCRIPTION"],
                [(p.name, p.family, p.method, "built-in" if p.builtin else "user", _short(p.description, 70))
                 for p in presets])
    return 0


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_show(args: argparse.Namespace) -> int:
    from workbench.core.config import deep_merge, validate_config  # pydantic: not for --help or the TUI
    from workbench.core.distributed import smallest_gpu_in_use
    from workbench.core.memory import detect_gpus, estimate_run
    from workbench.core.presets import differences, family_default, load_preset

    workspace = _workspace(args)
    preset = load_preset(args.name, workspace)
    data = deep_merge(preset.data, {"model": {"name_or_path": args.model}}) if args.model else preset.data
    config = validate_config(data, str(preset.path))
    default = family_default(preset)
    diff = differences(config, default.resolve() if default else None)
    gpus = detect_gpus()
    try:
        estimate = estimate_run(config, workspace, smallest_gpu_in_use(config, gpus),
                                reference_if_other_family=not args.model, cuda=bool(gpus))
        estimate_error = None
    except UserError as error:
        estimate, estimate_error = None, str(error)
    if args.json:
        print_json({
            "name": preset.name, "path": str(preset.path), "builtin": preset.builtin, "data": preset.data,
            "resolved": config.model_dump(mode="json"),
            "family_default": default.name if default else None,
            "differs_from_default": {key: {"value": v, "default": d} for key, (v, d) in diff.items()},
            "memory": estimate.to_dict() if estimate else None, "memory_error": estimate_error,
        })
        return 0
    print(f"# {preset.name} ({'built-in' if preset.builtin else 'user'}: {preset.path})")
    print(yaml.safe_dump(preset.data, allow_unicode=True, sort_keys=False).rstrip())
    if default is not None and default.name != preset.name:
        print(f"\ndiffers from {default.name}:")
        print_table(["FIELD", "VALUE", "DEFAULT"], [(k, str(v), str(d)) for k, (v, d) in diff.items()])
    print(f"\nmemory estimate for {estimate.model if estimate else config.model.name_or_path}:")
    if estimate is None:
        print(f"  {estimate_error}")
        return 0
    print_table(["PART", "GiB"], estimate.rows())
    print(f"params: {estimate.trainable_params:,} trainable of {estimate.total_params:,}")
    print(estimate.verdict())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from workbench.core.presets import list_presets, load_preset
    from workbench.engine.check import check_presets  # torch/peft: only for this command

    workspace = _workspace(args)
    presets = [load_preset(name, workspace) for name in args.names] if args.names else list_presets(workspace)
    results = check_presets(presets)
    if args.json:
        print_json([result.to_dict() for result in results])
    else:
        rows = []
        for result in results:
            for model in result.models or [None]:
                rows.append((result.preset, model.model_type if model else "-",
                             f"{model.trainable_params:,}" if model else "-",
                             f"{model.total_params:,}" if model else "-",
                             f"{100 * model.trainable_params / model.total_params:.1f}%"
                             if model and model.total_params else "-",
                             "ok" if model and not model.problems and not result.problems else "FAIL"))
        print_table(["PRESET", "MODEL", "TRAINABLE", "TOTAL", "%", "RESULT"], rows)
        for result in results:
            for problem in result.all_problems():
                print(f"{result.path}: {problem}")
    failed = [result.preset for result in results if not result.ok]
    if failed:
        raise UserError(f"{len(failed)} preset(s) failed the check: {', '.join(failed)}")
    return 0
