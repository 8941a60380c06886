"""The dtype follows the CPU: bfloat16 only where it has bf16 matrix units."""

import pytest

from generators.hardware import REPORTED_FLAGS, choose_dtype, describe, parse_flags

AMD_EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni vaes
"""
XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
"""
AVX512_BF16_ONLY = "flags\t: avx2 avx512f avx512_bf16\n"
ARM = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def test_flags_are_read_from_cpuinfo_text():
    assert "avx2" in parse_flags(AMD_EPYC_AVX2) and "amx_bf16" not in parse_flags(AMD_EPYC_AVX2)
    assert {"amx_bf16", "avx512_bf16"} <= parse_flags(XEON_AMX)
    assert "asimd" in parse_flags(ARM)
    assert parse_flags("") == frozenset()


@pytest.mark.parametrize("text, want", [(AMD_EPYC_AVX2, "float32"), (XEON_AMX, "bfloat16"),
                                        (AVX512_BF16_ONLY, "bfloat16"), (ARM, "float32"), ("", "float32")])
def test_auto_picks_bfloat16_only_with_bf16_units(text, want):
    assert choose_dtype("auto", parse_flags(text)) == want


def test_an_explicit_setting_overrides_the_flags():
    assert choose_dtype("bfloat16", parse_flags(AMD_EPYC_AVX2)) == "bfloat16"
    assert choose_dtype("float32", parse_flags(XEON_AMX)) == "float32"
    with pytest.raises(ValueError):
        choose_dtype("float16")


def test_the_report_names_the_cpu_its_flags_and_the_choice():
    d = describe()
    assert d["cpu"] and d["cores"] >= 1 and d["dtype"] in ("float32", "bfloat16")
    assert set(d["flags"]) <= set(REPORTED_FLAGS)


def test_the_settings_carry_one_dtype_for_every_model(monkeypatch):
    from generators.config import MLSettings

    monkeypatch.setenv("INTENTFLOW_DTYPE", "float32")
    assert MLSettings().dtype == "float32"
    monkeypatch.setenv("INTENTFLOW_DTYPE", "float16")
    with pytest.raises(Exception):
        MLSettings()
