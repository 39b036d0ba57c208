"""`univ autolabel`: RGB teachers label aligned pairs; the labels serve both modalities."""
