"""Operations on the archive: backup, checks, re-identification, samples."""
