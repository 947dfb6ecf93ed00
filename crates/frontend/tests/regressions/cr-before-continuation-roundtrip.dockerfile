FROM a
RUN x \\
  