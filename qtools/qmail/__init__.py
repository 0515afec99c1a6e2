"""qmail: qmail-smtpd, qmail-queue, qmail-send, qmail-qread, qmail-qstat, queue-fix ..."""
