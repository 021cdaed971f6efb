"""examples/n8n/*.json are importable n8n exports whose node types exist in n8n 1.123.

Allowed type versions, read from n8n's own source (github.com/n8n-io/n8n). No stored
source is tagged n8n@1.123.0, so each set holds only versions registered both in an older
source and in a newer one (n8n never unregisters an old typeVersion: saved workflows
must keep loading), which places them in 1.123 too:

- n8n-nodes-base.manualTrigger: `version: 1`, packages/nodes-base/nodes/ManualTrigger/
  ManualTrigger.node.ts @ 14631178d66d8df851410f84360e17a1cb8f8134.
- n8n-nodes-base.httpRequest: packages/nodes-base/nodes/HttpRequest/HttpRequest.node.ts
  registers 1, 2, 3, 4, 4.1 @ 01e1dc5cf07f415008e4d9d7d8a78c6dccdb79d6 (defaultVersion
  4.1); a later copy (found by content search, commit not shown) registers up to 4.3
  (defaultVersion 4.3); V3/HttpRequestV3.node.ts @ 00005e7ed2c2041f6d60684e3edcac01f843fdc4
  lists [3, 4, 4.1, 4.2, 4.3, 4.4]. 4.3/4.4 are left out: not tied to 1.123.
- n8n-nodes-base.splitOut: `version: 1`, packages/nodes-base/nodes/Transform/SplitOut/
  SplitOut.node.ts @ 030e633a7343e39d2b925210a6f96ae89602cbae.
- @n8n/n8n-nodes-langchain.lmChatAnthropic: `version: [1, 1.1, 1.2, 1.3, 1.4]`,
  packages/@n8n/nodes-langchain/nodes/llms/LMChatAnthropic/LmChatAnthropic.node.ts @
  01526fc87f7bb52b5b47703eedc02f2e65a65336; 1.3 is the first with the model as a
  resource locator (`{"__rl": true, ...}`); 1.4 (PDF input) left out: not tied to 1.123.
- @n8n/n8n-nodes-langchain.chainLlm: `version: [1, 1.1, 1.2, 1.3, 1.4]` in
  nodes/chains/ChainLLM/ChainLlm.node.ts @ 0099088c6d48cc3e1e396c58817dce0a153a53f1;
  a later build (content search) lists up to 1.7; 1.4 introduced `promptType` / `text`.
- The Anthropic credential (`anthropicApi`: apiKey, url = "Base URL") is
  packages/@n8n/nodes-langchain/credentials/AnthropicApi.credentials.ts @
  030e633a7343e39d2b925210a6f96ae89602cbae.
- @n8n/n8n-nodes-langchain.lmChatOpenAi: `version: [1, 1.1, 1.2, 1.3, 1.4]` in
  nodes/llms/LMChatOpenAi/LmChatOpenAi.node.ts @ 01526fc87f7bb52b5b47703eedc02f2e65a65336;
  1.3 is the first with the `responsesApiEnabled` toggle ("Use Responses API", default
  on); 1.4 left out: not tied to 1.123.
- @n8n/n8n-nodes-langchain.agent: versions 1 to 1.9, 2, 2.1, 2.2 in
  nodes/agents/Agent/Agent.node.ts @ 0066a039e2e6eacba5e3fa75d4ad430bc09e17e8 and the same
  list @ 755df7fa4381f8dc0857a18ac233b490a96befc1.
- @n8n/n8n-nodes-langchain.toolCalculator: `version: 1`, nodes/tools/ToolCalculator/
  ToolCalculator.node.ts @ 0c8d7ca7fcb49b8df53f2e13626e97603fc9e9e0.
- The OpenAI credential (`openAiApi`: apiKey, organizationId, url = "Base URL") is
  packages/nodes-base/credentials/OpenAiApi.credentials.ts (found by content search,
  commit not shown; older copies without `url` @ c925c768192eaf8b332bc02c5dda68b01802d3be).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "n8n"

ALLOWED: dict[str, set[float]] = {
    "n8n-nodes-base.manualTrigger": {1},
    "n8n-nodes-base.httpRequest": {3, 4, 4.1, 4.2},
    "n8n-nodes-base.splitOut": {1},
    "@n8n/n8n-nodes-langchain.lmChatAnthropic": {1, 1.1, 1.2, 1.3},
    "@n8n/n8n-nodes-langchain.chainLlm": {1, 1.1, 1.2, 1.3, 1.4},
    "@n8n/n8n-nodes-langchain.lmChatOpenAi": {1.3},
    "@n8n/n8n-nodes-langchain.agent": {1.9, 2, 2.1, 2.2},
    "@n8n/n8n-nodes-langchain.toolCalculator": {1},
}
CREDENTIAL_TYPES = {"httpHeaderAuth", "anthropicApi", "openAiApi"}
FILES = sorted(EXAMPLES.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    workflow = json.loads(path.read_text())
    assert isinstance(workflow, dict)
    return workflow


def test_the_examples_exist():
    assert {p.name for p in FILES} == {
        "generate-with-template.json",
        "anthropic-chat-model.json",
        "batch.json",
        "openai-agent-responses.json",
        "openai-agent-chat-completions.json",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_export_format_and_node_versions(path):
    workflow = _load(path)
    assert isinstance(workflow["name"], str) and workflow["name"]
    nodes = workflow["nodes"]
    names = [node["name"] for node in nodes]
    assert len(set(names)) == len(names), "node names must be unique"
    assert len({node["id"] for node in nodes}) == len(nodes)
    for node in nodes:
        assert node["type"] in ALLOWED, f"{node['name']}: unknown type {node['type']}"
        assert node["typeVersion"] in ALLOWED[node["type"]], (
            f"{node['name']}: {node['type']} has no typeVersion {node['typeVersion']}"
        )
        assert isinstance(node["parameters"], dict)
        assert len(node["position"]) == 2
        assert set(node.get("credentials", {})) <= CREDENTIAL_TYPES
    for source, outputs in workflow["connections"].items():
        assert source in names
        for kind, branches in outputs.items():
            for branch in branches:
                for link in branch:
                    assert link["node"] in names and link["type"] == kind
    for node_name in workflow.get("pinData", {}):
        assert node_name in names


def _node(workflow: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(node for node in workflow["nodes"] if node["type"] == type_)


def test_generate_example_calls_generate_with_a_template_and_item_variables():
    workflow = _load(EXAMPLES / "generate-with-template.json")
    http = _node(workflow, "n8n-nodes-base.httpRequest")["parameters"]
    assert http["method"] == "POST" and http["url"].endswith("/api/generate")
    assert "template:" in http["jsonBody"] and "$json.customer" in http["jsonBody"]
    items = workflow["pinData"]["When clicking 'Execute workflow'"]
    assert all({"customer", "question"} <= set(item["json"]) for item in items)


def test_chat_model_example_uses_an_anthropic_credential_under_a_chain():
    workflow = _load(EXAMPLES / "anthropic-chat-model.json")
    model = _node(workflow, "@n8n/n8n-nodes-langchain.lmChatAnthropic")
    assert "anthropicApi" in model["credentials"]
    assert model["parameters"]["model"]["__rl"] is True
    link = workflow["connections"][model["name"]]["ai_languageModel"][0][0]
    assert link["node"] == _node(workflow, "@n8n/n8n-nodes-langchain.chainLlm")["name"]


def test_batch_example_sends_every_item_in_one_batch_call():
    workflow = _load(EXAMPLES / "batch.json")
    http = _node(workflow, "n8n-nodes-base.httpRequest")
    assert http["parameters"]["url"].endswith("/api/generate/batch")
    assert http["executeOnce"] is True  # one call for all items, not one per item
    assert "$input.all()" in http["parameters"]["jsonBody"]
    assert _node(workflow, "n8n-nodes-base.splitOut")["parameters"]["fieldToSplitOut"] == (
        "results"
    )


@pytest.mark.parametrize(
    ("name", "responses_api"),
    [("openai-agent-responses.json", True), ("openai-agent-chat-completions.json", False)],
)
def test_openai_agent_examples_use_one_tool_and_the_responses_toggle(name, responses_api):
    workflow = _load(EXAMPLES / name)
    model = _node(workflow, "@n8n/n8n-nodes-langchain.lmChatOpenAi")
    assert "openAiApi" in model["credentials"]
    assert model["parameters"]["responsesApiEnabled"] is responses_api
    agent = _node(workflow, "@n8n/n8n-nodes-langchain.agent")["name"]
    links = workflow["connections"]
    assert links[model["name"]]["ai_languageModel"][0][0]["node"] == agent
    tool = _node(workflow, "@n8n/n8n-nodes-langchain.toolCalculator")["name"]
    assert links[tool]["ai_tool"][0][0]["node"] == agent
