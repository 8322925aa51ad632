"""Questions about your own documents, answered by the converted model through LangChain's OpenAI classes.

The model is served by ``python -m helpers serve`` (OpenAI-compatible, embeddings from the same GGUF); LangChain does
the rest: the text is split into chunks (``langchain-text-splitters``, at Chinese sentence ends first), each chunk
embedded through the server (``OpenAIEmbeddings``), the chunks nearest the question retrieved (``InMemoryVectorStore``)
and the question answered from them by ``ChatOpenAI``, so the server renders the release's own chat template.
privateGPT's OpenAI-like mode uses the same two endpoints (README, "Document QA").

- :func:`document_qa`: one question about one text, with the chunks it was answered from.
- :data:`DOCQA_PACKAGES`, :func:`missing_docqa_packages`: what it needs (not dependencies of helpers: notebook 03
  installs them on Colab when asked).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..util import UserError

DOCQA_PACKAGES = ("langchain-openai", "langchain-core", "langchain-text-splitters")
_MODULES = ("langchain_openai", "langchain_core", "langchain_text_splitters")
CHUNK_CHARS = 200  # characters per chunk: a few Chinese sentences, well inside the embedding context
CHUNK_OVERLAP = 20
SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", "，", " ", ""]  # paragraph, line, then Chinese sentence ends
QA_SYSTEM = "请仅根据以下资料回答问题；资料中没有答案时，请回答“资料中没有提到”。\n\n资料：\n{context}"


def missing_docqa_packages() -> list[str]:
    """The packages of :data:`DOCQA_PACKAGES` that are not installed."""
    import importlib.util

    return [p for p, m in zip(DOCQA_PACKAGES, _MODULES) if importlib.util.find_spec(m) is None]


@dataclass(frozen=True)
class DocAnswer:
    """The answer and the chunks it was given, nearest first."""

    answer: str
    chunks: tuple[str, ...]


def split_text(text: str, *, chunk_chars: int = CHUNK_CHARS, overlap: int = CHUNK_OVERLAP) -> list[str]:
    """``text`` in chunks of at most ``chunk_chars`` characters, cut at paragraph, line or sentence ends first."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_chars, chunk_overlap=overlap, separators=SEPARATORS,
                                              keep_separator="end")
    return [c.strip() for c in splitter.split_text(text) if c.strip()]


def document_qa(text: str, question: str, *, base_url: str, model: str, api_key: str = "none", k: int = 2,
                max_tokens: int = 256, chunk_chars: int = CHUNK_CHARS) -> DocAnswer:
    """Answer ``question`` from ``text`` with the model served at ``base_url`` (``http://host:port/v1``).

    Args:
        text: the document (any length: only the ``k`` nearest chunks reach the model).
        question: the question, in any language the model speaks.
        base_url: the OpenAI-compatible server's ``/v1`` address.
        model: the served model's id (``GET /v1/models``).
        api_key: the server's key, if it has one.
        k: chunks retrieved for the answer.
        max_tokens: length of the answer.
        chunk_chars: characters per chunk.

    Raises:
        UserError: LangChain's packages are missing, or the text is empty.
    """
    try:
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_core.vectorstores import InMemoryVectorStore
        from langchain_openai import ChatOpenAI, OpenAIEmbeddings
    except ImportError as err:
        raise UserError(f"document QA needs LangChain ({err.name} is missing): pip install "
                        + " ".join(DOCQA_PACKAGES)) from None
    chunks = split_text(text, chunk_chars=chunk_chars)
    if not chunks:
        raise UserError("the document is empty: give a UTF-8 text file with some text in it")
    # check_embedding_ctx_length=False: send the text itself, not tiktoken's ids of it (OpenAI's tokenizer, which
    # is not this model's and would be downloaded).
    embeddings = OpenAIEmbeddings(model=model, base_url=base_url, api_key=api_key, check_embedding_ctx_length=False)
    store = InMemoryVectorStore.from_texts(chunks, embedding=embeddings)
    found = [d.page_content for d in store.similarity_search(question, k=min(k, len(chunks)))]
    prompt = ChatPromptTemplate.from_messages([("system", QA_SYSTEM), ("user", "{question}")])
    llm = ChatOpenAI(model=model, base_url=base_url, api_key=api_key, temperature=0, max_tokens=max_tokens)
    answer = (prompt | llm | StrOutputParser()).invoke({"context": "\n\n".join(found), "question": question})
    return DocAnswer(answer.strip(), tuple(found))
