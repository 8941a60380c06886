from streams import fastpath


def test_fastpath_applies_to_the_pinned_faust():
    import faust.transport.consumer as fc

    assert fastpath.apply()
    assert "suspend_flow.is_set()" in fc.Consumer._drain_messages.__code__.co_names or fastpath._applied
