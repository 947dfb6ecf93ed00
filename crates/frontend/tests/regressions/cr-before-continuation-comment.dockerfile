FROM a
CMD x \\
  # comment ine just cUomments

