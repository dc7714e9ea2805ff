"""``aam inspect``: print a checkpoint's model card."""

from __future__ import annotations

import json

import click

from aam.cli import options as o


@click.command("inspect", cls=o.SectionedCommand)
@click.argument("model", type=click.Path(exists=True))
@o.apply([
    o.option("--json", "as_json", is_flag=True, default=o.INSPECT.as_json, section="Output",
             help="Print the card as JSON instead of text."),
])
def command(model: str, as_json: bool) -> None:
    """Print the model card of MODEL (best_model.pt, last_model.pt or pretrained_encoder.pt): task, target and
    its scaling, classes and categorical levels, training samples, groups and ASVs, scores, options, versions."""
    from aam.workflows.inspect import format_card, model_card
    from aam.workflows.run_config import InspectRun

    run = InspectRun(model=model, as_json=as_json)
    card = model_card(run.model)
    click.echo(json.dumps(card, indent=2, default=str) if run.as_json else format_card(card))
