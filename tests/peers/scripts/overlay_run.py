"""Run a script with one module of an installed package served from another file: a patched
(or pristine) copy of one upstream file runs against the rest of the released package, and
the installed package is never modified. After the script, prints one JSON line saying which
file the module came from, the package version and whether scalefix was importable.

usage: python overlay_run.py MODULE=FILE DISTRIBUTION SCRIPT [ARGS...]"""

import importlib.abc
import importlib.metadata
import importlib.util
import json
import runpy
import sys

module, _, path = sys.argv[1].partition("=")
distribution, script = sys.argv[2], sys.argv[3]


class Overlay(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, search_path=None, target=None):
        if fullname == module:
            return importlib.util.spec_from_file_location(fullname, path)
        return None


sys.meta_path.insert(0, Overlay())
scalefix_importable = importlib.util.find_spec("scalefix") is not None
sys.argv = sys.argv[3:]
runpy.run_path(script, run_name="__main__")
print(json.dumps({"module_file": getattr(sys.modules.get(module), "__file__", None),
                  "version": importlib.metadata.version(distribution),
                  "scalefix_importable": scalefix_importable
                  or "scalefix" in sys.modules}))
