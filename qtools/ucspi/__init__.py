"""ucspi-tcp 0.88: tcpserver, tcprules, tcprulescheck, tcpclient, recordio, rblsmtpd ..."""
