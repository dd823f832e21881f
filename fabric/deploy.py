"""Deploy the Fabric items with Microsoft's fabric-cicd: one command per workspace.

    python fabric/deploy.py --workspace-id <guid> --environment DEV      # or PROD; see parameter.yml

It builds the wheel (python -m build --wheel) unless --wheel names one, stages a copy of fabric/
with what is never committed or kept in one place elsewhere:
- the wheel, into the Environment's Libraries/CustomLibraries/;
- each Spark Job Definition's main file, from jobs/ (run.py for the pipeline, cli.py for batch work);
- each notebook, from notebooks/, as notebook-content.ipynb, its parameters cell set to the Fabric
  overlay and the same `--set` values as the pipeline's Spark Job Definition;
then publishes every item to the workspace (fabric-cicd replaces the <placeholders> per
environment from parameter.yml and points the jobs at the deployed lakehouse and environment).
Credentials: Azure CLI (`az login`) by default, --credential default for DefaultAzureCredential.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITEMS = ROOT / "fabric"
ITEM_TYPES = ["Lakehouse", "Environment", "SparkJobDefinition", "Notebook"]
PIPELINE_JOB = "xact_pipeline.SparkJobDefinition"


def pipeline_arguments(items: Path = ITEMS) -> list[str]:
    """The pipeline job's arguments: the one place the Fabric settings (`--env`, `--set`) are written."""
    spec = json.loads((items / PIPELINE_JOB / "SparkJobDefinitionV1.json").read_text())
    return shlex.split(spec["commandLineArguments"])


def logical_id(items: Path, folder: str) -> str:
    return json.loads((items / folder / ".platform").read_text())["config"]["logicalId"]


def notebook_for_fabric(source: Path, arguments: list[str], items: Path = ITEMS) -> dict:
    """The notebook with its parameters cell set to the Fabric overlay and the pipeline's --set values,
    attached to the environment that carries the wheel and to the lakehouse (by their logical ids,
    which fabric-cicd replaces with the deployed items' ids; the zero workspace id means "this one")."""
    notebook = json.loads(source.read_text())
    overrides = [arguments[i + 1] for i, a in enumerate(arguments) if a == "--set"]
    env = arguments[arguments.index("--env") + 1]
    for cell in notebook["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            lines = []
            for line in "".join(cell["source"]).splitlines(keepends=True):
                if line.startswith("env = "):
                    line = f"env = {env!r}\n"
                elif line.startswith("overrides = "):
                    line = f"overrides = {json.dumps(overrides)}\n"
                lines.append(line)
            cell["source"] = lines
            break
    else:
        raise SystemExit(f"error: {source} has no cell tagged parameters")
    this_workspace = "00000000-0000-0000-0000-000000000000"
    lakehouse = logical_id(items, "xact_lakehouse.Lakehouse")
    notebook["metadata"]["kernel_info"] = {"name": "synapse_pyspark"}
    notebook["metadata"]["dependencies"] = {
        "environment": {
            "environmentId": logical_id(items, "xact_environment.Environment"),
            "workspaceId": this_workspace,
        },
        "lakehouse": {
            "default_lakehouse": lakehouse,
            "default_lakehouse_name": "xact_lakehouse",
            "default_lakehouse_workspace_id": this_workspace,
            "known_lakehouses": [{"id": lakehouse}],
        },
    }
    return notebook


def stage(out: Path, wheel: Path, items: Path = ITEMS) -> Path:
    """A deployable copy of the items in `out`, with the wheel, main files and notebooks added."""
    staged = out / "fabric"
    shutil.copytree(items, staged, ignore=shutil.ignore_patterns("deploy.py", "__pycache__", "*.whl"))
    libraries = staged / "xact_environment.Environment" / "Libraries" / "CustomLibraries"
    libraries.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, libraries / wheel.name)
    for job in staged.glob("*.SparkJobDefinition"):
        main = json.loads((job / "SparkJobDefinitionV1.json").read_text())["executableFile"]
        (job / "Main").mkdir(exist_ok=True)
        shutil.copy2(ROOT / "jobs" / main, job / "Main" / main)
    arguments = pipeline_arguments(items)
    for item in staged.glob("*.Notebook"):
        source = ROOT / "notebooks" / f"{item.name.removesuffix('.Notebook')}.ipynb"
        notebook = notebook_for_fabric(source, arguments, items)
        (item / "notebook-content.ipynb").write_text(json.dumps(notebook, indent=1))
    return staged


def build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)], check=True)
    return next(out.glob("xact_pipeline-*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace-id", required=True, help="the target workspace's GUID")
    parser.add_argument("--environment", required=True, help="a key of parameter.yml's replace_value: DEV, PROD")
    parser.add_argument("--wheel", type=Path, help="a built wheel (default: build one)")
    parser.add_argument("--credential", choices=["cli", "default"], default="cli")
    parser.add_argument("--unpublish-orphans", action="store_true", help="also delete items not in fabric/")
    args = parser.parse_args(argv)

    from azure.identity import AzureCliCredential, DefaultAzureCredential
    from fabric_cicd import FabricWorkspace, publish_all_items, unpublish_all_orphan_items

    with tempfile.TemporaryDirectory(prefix="xact-fabric-") as tmp:
        wheel = args.wheel or build_wheel(Path(tmp) / "dist")
        staged = stage(Path(tmp), wheel)
        print(f"staged {staged} with {wheel.name}; publishing to workspace {args.workspace_id} ({args.environment})")
        workspace = FabricWorkspace(
            workspace_id=args.workspace_id,
            repository_directory=str(staged),
            item_type_in_scope=ITEM_TYPES,
            environment=args.environment,
            token_credential=AzureCliCredential() if args.credential == "cli" else DefaultAzureCredential(),
        )
        publish_all_items(workspace)
        if args.unpublish_orphans:
            unpublish_all_orphan_items(workspace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
