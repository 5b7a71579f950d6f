"""The camera-prompt agent: rule-based camera prompts from poses (`rules`) and their fusion with the user's
image and prompt through a back end (`fusion`)."""
