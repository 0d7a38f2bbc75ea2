module github.com/iscsifs/iscsifs

go 1.26.8
