"""Builds the package with its gRPC stubs generated from ../../crates/vault-proto/proto."""

import pathlib
import re

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
PROTOS = HERE.parent.parent / "crates" / "vault-proto" / "proto"


class BuildWithStubs(build_py):
    """Runs protoc (grpcio-tools) on vault/v1/*.proto into vaultd/_proto."""

    def run(self):
        super().run()
        from grpc_tools import protoc
        import grpc_tools

        out = pathlib.Path(self.build_lib) / "vaultd" / "_proto"
        out.mkdir(parents=True, exist_ok=True)
        (out / "__init__.py").write_text('"""Generated from vaultd\'s protos at build time."""\n')
        sources = sorted(str(p) for p in (PROTOS / "vault" / "v1").glob("*.proto"))
        if not sources:
            raise SystemExit(f"no protos under {PROTOS}: build from the vaultd repository")
        include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
        args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
        if protoc.main(args + sources) != 0:
            raise SystemExit("protoc failed on vaultd's protos")
        # The generated modules import each other as `vault.v1`; make that package-relative.
        for path in (out / "vault").rglob("*.py"):
            text = re.sub(r"^from vault\.v1 import", "from vaultd._proto.vault.v1 import", path.read_text(), flags=re.M)
            path.write_text(text)
        for package in (out / "vault", out / "vault" / "v1"):
            (package / "__init__.py").touch()


setup(cmdclass={"build_py": BuildWithStubs})
