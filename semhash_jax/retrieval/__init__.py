"""Retrieval with binary hash codes: sign binarisation, bit packing, Hamming distance and mAP."""
