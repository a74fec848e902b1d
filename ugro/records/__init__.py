"""What ugro writes down and several processes read, typed where it is defined: the job
history and its states table, a job's controller's files, the daemon's files. A writer and its
readers share these modules instead of importing each other (the daemon and `ugro status`; a
controller and `ugro stop`)."""
