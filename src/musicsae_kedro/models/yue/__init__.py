"""YuE stage 1 (``m-a-p/YuE-s1-7B-*``, LLaMA architecture) adapter."""

from musicsae_kedro.models.yue.adapter import YueAdapter

__all__ = ["YueAdapter"]
