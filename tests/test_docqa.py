"""Document question answering through LangChain's OpenAI classes (langchain-openai, langchain-core) and
``helpers serve`` (embeddings and replies from the same GGUF), as notebook 03's ``DOC_FILE`` cell runs it: the chunk
LangChain retrieves is the one the server's own embeddings rank first by cosine similarity (computed here from
``/v1/embeddings`` with the ``openai`` client), it holds the answer on a fixed Chinese text, and the chain answers."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hubtwin import free_port

pytest.importorskip("langchain_openai")
pytest.importorskip("langchain_text_splitters")
openai = pytest.importorskip("openai")
pytestmark = [pytest.mark.slow, pytest.mark.llama_cpp]

DOC = """故宫位于北京市中心，是明清两代的皇家宫殿，旧称紫禁城，始建于明朝永乐四年。

西湖位于浙江省杭州市西部，以秀丽的湖光山色和众多的名胜古迹闻名，苏堤和白堤横贯湖面。

兵马俑位于陕西省西安市临潼区，是秦始皇陵的陪葬坑，一九七四年被当地农民打井时发现。

黄山位于安徽省南部，以奇松、怪石、云海、温泉四绝著称，一九九零年列入世界遗产名录。"""
QUESTIONS = {"兵马俑是哪一年被发现的？": "一九七四年", "黄山有哪四绝？": "奇松、怪石、云海、温泉", "故宫旧称什么？": "紫禁城",
             "西湖在哪个城市？": "杭州"}



@pytest.fixture(scope="module")
def gguf(alpaca2_gguf) -> Path:
    return alpaca2_gguf


@pytest.fixture(scope="module")
def server(gguf):
    from helpers.chat import serve
    from helpers.chat.options import ServeOptions

    with serve(ServeOptions(model=gguf, port=free_port(), n_ctx=2048)) as s:
        yield s


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_split_cuts_at_chinese_sentence_ends():
    from helpers.chat.docqa import split_text

    chunks = split_text(DOC, chunk_chars=60)
    assert len(chunks) == 4 and all(c.endswith("。") for c in chunks)
    assert "".join(chunks) == DOC.replace("\n", "")


@pytest.mark.parametrize("question", list(QUESTIONS))
def test_retrieval_is_the_servers_nearest_chunk_and_holds_the_answer(server, question):
    from helpers.chat.docqa import document_qa, split_text

    found = document_qa(DOC, question, base_url=server.url, model=server.model_id, k=1, max_tokens=8,
                        chunk_chars=60)
    chunks = split_text(DOC, chunk_chars=60)
    client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
    vectors = [d.embedding for d in client.embeddings.create(model=server.model_id, input=[question, *chunks]).data]
    nearest = max(chunks, key=lambda c: _cosine(vectors[0], vectors[1 + chunks.index(c)]))
    assert found.chunks == (nearest,)
    assert QUESTIONS[question] in nearest
    assert isinstance(found.answer, str) and found.answer  # the chain ran to the model's reply


def test_notebook_03_answers_doc_question_through_its_server(gguf, tmp_path, capsys):
    """``DOC_FILE`` / ``DOC_QUESTION`` in 03's form: checked before anything loads (a missing file, no server), then
    the server cell answers from the nearest chunks and the summary says so."""
    from helpers.stages import ChatStage
    from helpers.util import UserError

    doc = tmp_path / "places.txt"
    doc.write_text(DOC, encoding="utf-8")
    form = dict(model=str(gguf), start_server=True, doc_file=str(doc), doc_question="故宫旧称什么？", max_new_tokens=8,
                prompt="你好", draft_model="")
    with pytest.raises(UserError, match="DOC_FILE"):
        ChatStage(**{**form, "doc_file": str(tmp_path / "nowhere.txt")}).plan()
    refused = ChatStage(**{**form, "start_server": False}).plan()
    assert not refused.fits and "START_SERVER=True" in refused.refusal()
    stage = ChatStage(**form)
    plan = stage.check()
    assert any("document QA: " in n for n in plan.notes)
    report = stage.headless(plan, plan.run())
    assert report.documents is not None and "紫禁城" in "".join(report.documents.chunks)
    assert "document QA on" in report.summary() and "retrieved 1:" in capsys.readouterr().out
