"""Online SAE training: the model runs teacher-forced over the cached codec tokens and
its activations feed every site's SAE directly; no activation store is written."""
