from webui.textstream import IncrementalDecoder, StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    out = "".join(matcher.feed(p) for p in pieces)
    return out + matcher.flush()


def test_stop_string_split_across_pieces_never_leaks():
    matcher = StopMatcher(["\nUser:"])
    shown = [matcher.feed(p) for p in ["Hello", " there", "\n", "Us", "er", ": more"]]
    assert "".join(shown) == "Hello there"
    assert all("\n" not in s for s in shown)
    assert matcher.stopped_by == "\nUser:"
    assert matcher.flush() == ""


def test_held_back_text_is_released_when_it_cannot_be_a_stop():
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("abc ST") == "abc "
    assert matcher.feed("AR") == "STAR"
    assert feed_all(StopMatcher(["STOP"]), ["x", "ST"]) == "xST"


def test_earliest_stop_string_wins():
    matcher = StopMatcher(["world", "lo w"])
    assert matcher.feed("hello world") == "hel"
    assert matcher.stopped_by == "lo w"


def test_no_stops_passes_everything_through():
    matcher = StopMatcher([])
    assert matcher.feed("abc") == "abc"


def byte_tokenizer():
    """Each token is one byte of UTF-8: multi-byte characters arrive split across tokens."""
    def detok(ids):
        return bytes(ids).decode("utf-8", errors="replace")
    return detok


def test_incremental_decoder_holds_partial_utf8_characters():
    decoder = IncrementalDecoder(byte_tokenizer())
    data = "héllo 🙂!".encode()
    deltas = [decoder.push(b) for b in data]
    assert "".join(deltas) == "héllo 🙂!"
    assert all("\ufffd" not in d for d in deltas)
    assert decoder.flush() == ""


def test_incremental_decoder_flush_emits_incomplete_tail():
    decoder = IncrementalDecoder(byte_tokenizer())
    for b in "a🙂".encode()[:-1]:
        decoder.push(b)
    assert decoder.flush() == "\ufffd"
