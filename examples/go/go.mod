module owlore

go 1.19
