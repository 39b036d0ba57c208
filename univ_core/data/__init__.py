"""RGB-T data: decoding, paired geometry, pre-training pairs, labelled sets, the data folder.

Modules: `io` (decoding), `transforms` (paired crop, normalisation), `paired` (pre-training pairs
in native layouts), `labelled` (labelled sets), `home` (the data folder). Import from them: this
package imports nothing, so `univ_core.data.home` stays light.
"""
