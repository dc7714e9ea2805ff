"""The token vocabulary of ASV sequences, defined once: the data layer tokenises with it, the models embed it."""

PAD, A, C, G, T, UNK, START, MASK = range(8)
VOCAB_SIZE = 8
NUCLEOTIDE_TOKENS = (A, C, G, T, UNK)  # positions eligible for masked-nucleotide prediction
