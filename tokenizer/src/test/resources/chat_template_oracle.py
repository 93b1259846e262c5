# Renders chat templates the way Hugging Face transformers does (jinja2 sandbox, trim_blocks, lstrip_blocks),
# as the oracle for the Java renderer. stdin: {"template", "bos_token", "eos_token", "cases": [{"messages", "add_generation_prompt"}]}
import json
import sys

from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise ValueError(message)


request = json.load(sys.stdin)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
env.globals["raise_exception"] = raise_exception
template = env.from_string(request["template"])
out = []
for case in request["cases"]:
    out.append(template.render(messages=case["messages"], add_generation_prompt=case["add_generation_prompt"],
                               bos_token=request["bos_token"], eos_token=request["eos_token"]))
json.dump(out, sys.stdout)
